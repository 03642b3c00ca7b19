"""``backworks validate``: each kind of plugin mistake is one precise error, in text and JSON, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backworks.cli import app
from tests.files import write_blueprint
from tests.samples import PROCESSOR_FACTORY_SOURCE, write_plugin_file

runner = CliRunner()

PLUGINS = (
    PROCESSOR_FACTORY_SOURCE
    + """
Needy = processor("needy", "1.0.0", request_headers=">=1.0,<2")
Picky = processor("picky", "1.0.0", request_headers=">=2")
Chicken = processor("chicken", "1.0.0", egg="")
Egg = processor("egg", "1.0.0", chicken="")
"""
)

HEAD = "name: api\nplugin_dirs: [local]\n"
HANDLER = "handler: {type: mock}"

CASES = {
    "unknown plugin": (
        HEAD + f"plugins:\n  a: {{type: moch}}\nendpoints:\n  e: {{path: /a, {HANDLER}}}\n",
        ("/plugins/a/type", 4, 13, "a"),
        "unknown plugin type 'moch' (did you mean 'mock'?)",
    ),
    "bad config type": (
        HEAD + "plugins:\n  a: {type: request-headers, config: {set: {x-a: [1]}}}\n"
        f"endpoints:\n  e: {{path: /a, plugins: [a], {HANDLER}}}\n",
        ("/plugins/a/config/set/x-a", 4, 50, "a"),
        "[1] is not of type 'string'",
    ),
    "missing dependency": (
        HEAD + f"plugins:\n  n: {{type: needy}}\nendpoints:\n  e: {{path: /a, plugins: [n], {HANDLER}}}\n",
        ("/endpoints/e/plugins/0", 6, 27, "n"),
        "'n' (needy) needs plugin 'request-headers' (>=1.0,<2), but the blueprint declares no instance of it",
    ),
    "version conflict": (
        HEAD + "plugins:\n  p: {type: picky}\n  s: {type: request-headers}\n"
        f"endpoints:\n  e: {{path: /a, plugins: [s, p], {HANDLER}}}\n",
        ("/plugins/p/type", 4, 13, "p"),
        "version conflict picky -> request-headers: picky 1.0.0 needs request-headers >=2 but request-headers "
        "1.0.0 is installed",
    ),
    "cycle": (
        HEAD + f"plugins:\n  c: {{type: chicken}}\nendpoints:\n  e: {{path: /a, {HANDLER}}}\n",
        ("/plugins/c/type", 4, 13, "c"),
        "dependency cycle: chicken -> egg -> chicken",
    ),
    "yaml syntax error": (
        HEAD + "plugins:\n  a: {type: mock\nendpoints: {}\n",
        ("/", 5, 10, None),
        "YAML syntax error",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_mistake_is_one_precise_error(case: str, tmp_path: Path) -> None:
    text, (pointer, line, column, plugin), message = CASES[case]
    write_plugin_file(tmp_path, "plugins.py", PLUGINS)
    path = write_blueprint(tmp_path, text)

    result = runner.invoke(app, ["validate", str(path), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    (error,) = report["errors"]
    assert (error["file"], error["pointer"], error["line"], error["column"], error["plugin"]) == (
        str(path), pointer, line, column, plugin
    )  # fmt: skip
    assert message in error["message"]

    text_result = runner.invoke(app, ["validate", str(path)])
    assert text_result.exit_code == 1
    scope = f" [plugin {plugin}]" if plugin else ""
    unwrapped = text_result.stdout.replace("\n", "")  # the report is the result: stdout
    assert f"{path}:{line}:{column}: {pointer}{scope}: " in unwrapped and message in unwrapped


def test_secret_values_stay_out_of_the_report(tmp_path: Path) -> None:
    write_plugin_file(
        tmp_path,
        "plugins.py",
        PLUGINS
        + """
from pydantic import BaseModel, ConfigDict, Field, SecretStr


class VaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr = Field(min_length=20)


class Vault(RequestProcessor[VaultConfig]):
    name = "vault"
    version = "1.0.0"
    description = "Needs a long token."
    Config = VaultConfig

    async def process_request(self, envelope: Envelope) -> Action:
        return Continue(envelope)
""",
    )
    plugins = "plugins:\n  v: {type: vault, config: {token: short-s3cret}}\n"
    path = write_blueprint(tmp_path, HEAD + plugins + f"endpoints:\n  e: {{path: /a, {HANDLER}}}\n")
    result = runner.invoke(app, ["validate", str(path), "--format", "json"])
    assert result.exit_code == 1
    (error,) = json.loads(result.stdout)["errors"]
    assert error["pointer"] == "/plugins/v/config/token" and "value hidden" in error["message"]
    assert "short-s3cret" not in result.stdout + result.stderr
