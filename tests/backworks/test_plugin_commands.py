"""``backworks plugins list/show/order``, ``docs``, ``profile`` and ``new-plugin``, run in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from nats.js.errors import NoKeysError
from typer.testing import CliRunner

from backworks.cli import app
from backworks.contracts.names import CACHE_BUCKET
from backworks.local.embedded import EmbeddedNats
from backworks.local.ports import free_port
from backworks.pipeline import broker
from backworks.pipeline.secrets import MASK
from backworks.plugins.request_headers import RequestHeaders
from backworks.sdk import StageRunner
from tests.files import write_blueprint
from tests.samples import write_plugin_file

runner = CliRunner()

FOLDER_PLUGIN = """
from pydantic import BaseModel, ConfigDict, Field

from backworks import Action, Continue, Envelope, RequestProcessor


class HookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(default="https://hooks.example/very-secret-path", json_schema_extra={"secret": True},
                     description="Where to post.")
    retries: int = Field(default=2, ge=0, description="How often to retry.")


class Notify(RequestProcessor[HookConfig]):
    name = "notify"
    version = "0.3.0"
    description = "Posts a notification per request."
    dependencies = {"request-headers": ">=1.0,<2", "ghost": ">=1"}
    capabilities = ("notify",)
    priority = 7
    Config = HookConfig

    async def process_request(self, envelope: Envelope) -> Action:
        return Continue(envelope)
"""

BLUEPRINT = """name: api
plugin_dirs: [local]
plugins:
  stamp: {type: request-headers, config: {set: {x-stamped: "yes"}}}
  note: {type: notify}
endpoints:
  e: {path: /a, plugins: [note], handler: {type: mock}}
"""


@pytest.fixture
def blueprint(tmp_path: Path) -> Path:
    write_plugin_file(tmp_path, "notify.py", FOLDER_PLUGIN)
    return write_blueprint(tmp_path, BLUEPRINT)


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_installed_and_folder_plugins_without_a_broker(blueprint: Path) -> None:
    code, out, _ = invoke("plugins", "list", str(blueprint), "--nats", "")
    assert code == 0
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert set(lines) >= {"mock", "request-headers", "response-headers", "notify"}
    cells = [cell.strip() for cell in lines["notify"].split("│")[1:-1]]
    assert cells == ["notify", "0.3.0", "request-processor", str(blueprint.parent / "local" / "notify.py"), "no", "-"]
    mock = [cell.strip() for cell in lines["mock"].split("│")[1:-1]]
    assert mock == ["mock", "1.0.0", "handler", "built-in", "yes", "-"]
    assert "instances live" in out


def test_list_says_when_the_broker_cannot_be_reached() -> None:
    code, out, err = invoke("plugins", "list", "--nats", f"nats://127.0.0.1:{free_port()}", "--format", "json")
    assert code == 0
    assert all(row["live"] is None for row in json.loads(out)["plugins"])
    assert "live counts unknown" in err


async def test_list_counts_live_replicas_from_the_registry(nats_server: EmbeddedNats) -> None:
    async with StageRunner(RequestHeaders, {"set": {"x": "1"}}, instance="stamp", nats_url=nats_server.url):
        result = await asyncio.to_thread(
            runner.invoke, app, ["plugins", "list", "--nats", nats_server.url, "--format", "json"]
        )
    assert result.exit_code == 0, result.stderr
    live = {row["name"]: row["live"] for row in json.loads(result.stdout)["plugins"]}
    assert live["request-headers"] == 1 and live["mock"] == 0


def test_show_prints_metadata_dependencies_and_a_masked_schema(blueprint: Path) -> None:
    code, out, _ = invoke("plugins", "show", "notify", str(blueprint), "--format", "json")
    assert code == 0
    info = json.loads(out)
    assert (info["version"], info["category"], info["priority"], info["phases"]) == ("0.3.0", "request-processor", 7,
                                                                                     ["request"])  # fmt: skip
    assert info["hooks"] == ["process_request"] and info["capabilities"] == ["notify"]
    assert info["dependencies"] == [
        {"name": "request-headers", "constraint": ">=1.0,<2", "installed": "1.0.0", "satisfied": True},
        {"name": "ghost", "constraint": ">=1", "installed": None, "satisfied": False},
    ]
    assert info["config_schema"]["properties"]["url"]["default"] == MASK
    assert "very-secret-path" not in out
    code, text, _ = invoke("plugins", "show", "notify", str(blueprint))
    assert code == 0
    assert "Posts a notification per request." in text and "How often to retry." in text
    assert "missing" in text and "NO" in text and "very-secret-path" not in text


def test_show_of_an_unknown_plugin_fails_with_a_suggestion() -> None:
    code, _, err = invoke("plugins", "show", "mokc")
    assert code == 1 and "did you mean 'mock'?" in err


def test_order_shows_dependencies_first_and_what_was_added(tmp_path: Path) -> None:
    write_plugin_file(tmp_path, "notify.py", FOLDER_PLUGIN.replace(', "ghost": ">=1"', ""))
    path = write_blueprint(tmp_path, BLUEPRINT)
    code, out, _ = invoke("plugins", "order", str(path), "--format", "json")
    assert code == 0
    assert json.loads(out) == {
        "endpoints": {"e": ["stamp.request", "note.request", "e-handler.request"]},
        "added_for_dependencies": {"e": ["stamp"]},
        "splits": {"e": {}},
        "groups": {},
    }
    broken = write_blueprint(tmp_path, BLUEPRINT.replace("type: notify", "type: notice"), "broken.yaml")
    code, _, err = invoke("plugins", "order", str(broken))
    assert code == 2 and "unknown plugin type 'notice'" in err


def test_docs_render_every_plugin_with_its_config(blueprint: Path, tmp_path: Path) -> None:
    target = tmp_path / "PLUGINS.md"
    code, _, _ = invoke("docs", str(blueprint), "--output", str(target))
    assert code == 0
    text = target.read_text()
    assert text.startswith("# Plugin reference")
    for name in ("mock", "request-headers", "response-headers", "notify"):
        assert f"\n## {name}\n" in text
    assert "| `retries` | integer (>= 0) | no | `2` | How often to retry. |" in text
    assert '| `url` | string | no | `"********"` | Where to post. **Secret:** masked in logs' in text
    assert "| [request-headers](#request-headers) | `>=1.0,<2` |" in text
    assert "very-secret-path" not in text
    code, out, _ = invoke("docs")
    assert code == 0 and "## mock" in out and "## notify" not in out


def test_profile_measures_each_hook(tmp_path: Path) -> None:
    blueprint = write_blueprint(
        tmp_path,
        BLUEPRINT.replace("plugin_dirs: [local]\n", "").replace("  note: {type: notify}\n", "").replace("[note]", "[]"),
    )
    code, out, _ = invoke("profile", "stamp", "--blueprint", str(blueprint), "--requests", "50", "--format", "json")
    assert code == 0
    report = json.loads(out)
    (hook,) = report["hooks"]
    assert (report["plugin"], report["requests"], hook["hook"], hook["calls"]) == ("request-headers", 50,
                                                                                  "process_request", 50)  # fmt: skip
    assert hook["outcomes"] == {"continue": 50} and hook["p50_ms"] <= hook["p99_ms"] and hook["mean_alloc_bytes"] > 0
    code, out, _ = invoke("profile", "mock", "--config", '{"status": 201}', "--requests", "20")
    assert code == 0 and "profile of mock 1.0.0: 20 requests" in out and "handle" in out
    code, _, err = invoke("profile", "mock", "--config", '{"status": "x"}')
    assert code == 2 and "invalid config for plugin 'mock'" in err and "/status" in err


def test_profile_with_nats_runs_a_kv_plugin_against_the_real_bucket(nats_server: EmbeddedNats) -> None:
    async def declare() -> None:
        client = await broker.connect([nats_server.url], name="test")
        await broker.declare(broker.jetstream(client), storage="memory")
        await client.close()

    async def keys() -> list[str]:
        client = await broker.connect([nats_server.url], name="test")
        try:
            bucket = await client.jetstream().key_value(CACHE_BUCKET)
            for _ in range(20):  # nats-py lists keys through a watch that may give up early on a loaded machine
                with contextlib.suppress(NoKeysError):
                    return list(await bucket.keys())
                await asyncio.sleep(0.5)
            return []
        finally:
            await client.close()

    asyncio.run(declare())
    code, out, err = invoke("profile", "cache", "--nats", nats_server.url, "--requests", "40", "--format", "json")
    assert code == 0, err
    assert {hook["hook"] for hook in json.loads(out)["hooks"]} == {"process_request", "process_response"}
    stored = asyncio.run(keys())
    assert stored and all(key.startswith("profile.") for key in stored), stored


def test_new_plugin_refuses_bad_names_dependencies_and_existing_folders(tmp_path: Path) -> None:
    assert invoke("new-plugin", "Bad Name", "--dir", str(tmp_path))[0] == 2
    code, _, err = invoke("new-plugin", "ok", "--dir", str(tmp_path), "--depends", "api-key~>1")
    assert code == 2 and "is not a version constraint" in err
    assert invoke("new-plugin", "ok", "--dir", str(tmp_path))[0] == 0
    code, _, err = invoke("new-plugin", "ok", "--dir", str(tmp_path))
    assert code == 2 and "already exists" in err
