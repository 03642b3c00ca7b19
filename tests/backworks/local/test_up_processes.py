"""A blueprint's ``processes``: ``backworks up`` runs each in the blueprint's folder, ``python`` as its own
interpreter, next to the gateway and the plugin services."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from backworks.contracts.errors import BlueprintError
from backworks.local.up import children, plan
from backworks.pipeline import blueprints
from tests.files import write_blueprint

BLUEPRINT = """\
name: with-upstream
processes:
  upstream: {command: [python, upstream.py, "9181"]}
  other: {command: [/bin/echo, hello]}
endpoints:
  hello: {path: /hello, handler: {type: mock, config: {body: hi}}}
"""


def test_processes_run_in_the_blueprint_folder_with_this_interpreter(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, BLUEPRINT)
    loaded = blueprints.load(path)
    decided = plan(loaded, str(path), ["nats://127.0.0.1:1"], "127.0.0.1", 0, 0, {"hello-handler": 1})
    _, services = children(decided)
    extras = {child.name: child for child in services if child.name.startswith("process ")}
    assert [*extras] == ["process upstream", "process other"]
    assert extras["process upstream"].program == []
    assert extras["process upstream"].args == [sys.executable, "upstream.py", "9181"]
    assert extras["process other"].args == ["/bin/echo", "hello"]
    assert all(child.cwd == tmp_path for child in extras.values())
    assert [child.name for child in services if not child.name.startswith("process ")] == [
        "gateway", "serve hello-handler"
    ]  # fmt: skip


def test_an_empty_command_is_a_blueprint_error_with_its_line(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, BLUEPRINT.replace("[/bin/echo, hello]", "[]"))
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(path)
    rendered = [issue.render() for issue in caught.value.issues]
    assert any("/processes/other/command" in line and ":4" in line for line in rendered), rendered
