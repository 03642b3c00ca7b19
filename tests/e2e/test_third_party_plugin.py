"""A third-party plugin, from ``backworks new-plugin`` to serving requests, the way a user gets there:

scaffold it, run its generated tests, ``pip install`` it into this venv, see it in ``backworks plugins list``,
validate a blueprint that uses it (it runs after the plugin it depends on), serve it with ``backworks serve``
behind ``backworks gateway``, and see its live replica in ``plugins list``. It is uninstalled afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backworks.local.embedded import EmbeddedNats
from backworks.local.ports import free_port
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy
from tests.files import write_blueprint

pytestmark = pytest.mark.e2e

BLUEPRINT = """name: third-party
plugins:
  stamp: {{type: request-headers, config: {{set: {{x-stamped: "yes"}}}}}}
  greet: {{type: {plugin}, config: {{header: x-greeting, value: hello}}}}
endpoints:
  hello:
    path: /hello/{{name}}
    plugins: [greet, stamp]
    handler:
      type: mock
      config: {{body: {{greeting: "{{header.x-greeting}}", stamped: "{{header.x-stamped}}", to: "{{path.name}}"}}}}
"""


def backworks(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([BACKWORKS, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"backworks {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scaffolded plugin package, pip-installed into this venv for the test, then uninstalled."""
    name = f"e2e-greeter-{uuid.uuid4().hex[:6]}"
    backworks("new-plugin", name, "--category", "request-processor", "--dir", str(tmp_path),
              "--depends", "request-headers>=1.0,<2", "--description", "Greets from a third party.")  # fmt: skip
    root = tmp_path / f"backworks-plugin-{name}"
    generated = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert generated.returncode == 0 and "2 passed" in generated.stdout, generated.stdout + generated.stderr
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: builds with this venv's setuptools instead of downloading one.
    subprocess.run([*pip, "install", "--no-build-isolation", "--no-deps", str(root)], check=True, timeout=120)
    try:
        yield name, root
    finally:
        subprocess.run([*pip, "uninstall", "-y", f"backworks-plugin-{name}"], check=True, timeout=60)


def test_a_scaffolded_plugin_is_installed_validated_ordered_served_and_listed(
    installed_plugin: tuple[str, Path], nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    name, _ = installed_plugin
    listed = json.loads(backworks("plugins", "list", "--format", "json").stdout)
    (row,) = [row for row in listed["plugins"] if row["name"] == name]
    assert row == {"name": name, "version": "0.1.0", "category": "request-processor",
                   "source": f"backworks-plugin-{name} 0.1.0", "critical": False, "live": None,
                   "live_versions": None}  # fmt: skip
    shown = json.loads(backworks("plugins", "show", name, "--format", "json").stdout)
    assert shown["dependencies"] == [
        {"name": "request-headers", "constraint": ">=1.0,<2", "installed": "1.0.0", "satisfied": True}
    ]

    lonely = write_blueprint(tmp_path, BLUEPRINT.format(plugin=name).replace("[greet, stamp]", "[greet]").replace(
        '  stamp: {type: request-headers, config: {set: {x-stamped: "yes"}}}\n', ""), "lonely.yaml")  # fmt: skip
    refused = backworks("validate", str(lonely), "--format", "json", check=False)
    assert refused.returncode == 1
    (error,) = json.loads(refused.stdout)["errors"]
    assert (error["pointer"], error["plugin"], error["line"]) == ("/endpoints/hello/plugins/0", "greet", 7)
    assert f"'greet' ({name}) needs plugin 'request-headers' (>=1.0,<2)" in error["message"]

    blueprint = write_blueprint(tmp_path, BLUEPRINT.format(plugin=name))
    assert json.loads(backworks("validate", str(blueprint), "--format", "json").stdout)["valid"] is True
    order = json.loads(backworks("plugins", "order", str(blueprint), "--format", "json").stdout)
    assert order["endpoints"]["hello"] == ["stamp.request", "greet.request", "hello-handler.request"]

    url, port = nats_server.url, free_port()
    backworks("declare", str(blueprint), "--nats", url)
    log = tmp_path / "services.log"
    processes = [start("serve", instance, str(blueprint), "--nats", url, log=log)
                 for instance in ("greet", "stamp", "hello-handler")]  # fmt: skip
    processes.append(start("gateway", str(blueprint), "--nats", url, "--port", str(port), log=log))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=30)
        answer = httpx.get(f"{base}/hello/ann", timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"greeting": "hello", "stamped": "yes", "to": "ann"}
        stages = [entry.split(";")[0] for entry in answer.headers["server-timing"].split(", ")]
        assert stages[:3] == ["stamp.request", "greet.request", "hello-handler.request"]
        live = json.loads(backworks("plugins", "list", "--nats", url, "--format", "json").stdout)
        counts = {row["name"]: row["live"] for row in live["plugins"]}
        assert counts[name] == 1 and counts["request-headers"] == 1 and counts["mock"] == 1
    finally:
        for process in processes:
            stop(process)
    assert log.exists()
