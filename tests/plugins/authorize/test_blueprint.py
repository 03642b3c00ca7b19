"""The security plugins in a blueprint: `backworks validate` orders and checks them, `backworks docs` documents them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from backworks.cli import app
from backworks.pipeline import blueprints
from backworks.plugins.api_key import digest
from tests.files import write_blueprint

runner = CliRunner()
ALICE = digest("alice-key")

GOOD = f"""
name: notes
plugins:
  keys:
    type: api-key
    config:
      keys: [{{consumer: alice, sha256: {ALICE}, scopes: [notes:write]}}]
  token:
    type: jwt
    config: {{algorithms: [HS256], secret: an-hmac-secret-of-at-least-32-bytes!, audience: notes}}
  writers:
    type: authorize
    config: {{scopes: [notes:write]}}
endpoints:
  by-key:
    path: /notes
    methods: [POST]
    plugins: [writers, keys]
    handler: {{type: mock}}
  by-token:
    path: /token/notes
    plugins: [token, writers]
    handler: {{type: mock}}
"""


def validate(path: Path) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["validate", str(path), "--format", "json"])
    report: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, report


def test_authorize_runs_after_the_authenticator_whatever_the_listed_order(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, GOOD)
    assert validate(path) == (0, {"valid": True, "errors": []})
    loaded = blueprints.load(path)
    assert loaded.chain("by-key") == ["keys", "writers"], "moved before the stage that requires its principal"
    assert [stage.label for stage in loaded.itinerary("by-token")] == [
        "token.request", "writers.request", "by-token-handler.request",
    ]  # fmt: skip


def test_authorize_without_an_authenticator_is_refused_naming_the_chain(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, GOOD.replace("plugins: [token, writers]", "plugins: [writers]"))
    code, report = validate(path)
    assert code == 1
    (error,) = report["errors"]
    assert (error["pointer"], error["plugin"], error["line"]) == ("/endpoints/by-token/plugins/0", "writers", 22)
    assert error["message"] == (
        "endpoint 'by-token': 'writers' (authorize) requires the 'principal' capability from an earlier stage, but "
        "nothing in its chain provides it (writers -> by-token-handler): add one of the declared instances that "
        "provide it (keys (api-key), token (jwt)) to this endpoint's plugins"
    )


def test_bad_security_configs_are_each_reported_where_they_are(tmp_path: Path) -> None:
    text = (
        GOOD.replace(ALICE, "not-a-digest")
        .replace("secret: an-hmac-secret-of-at-least-32-bytes!", "public_key: nope")
        .replace("scopes: [notes:write]}", "scope: [notes:write]}")
    )
    code, report = validate(write_blueprint(tmp_path, text))
    assert code == 1
    found = {(error["plugin"], error["pointer"]): error["message"] for error in report["errors"]}
    assert "value hidden" in found[("keys", "/plugins/keys/config/keys/0/sha256")]
    assert "not a PEM public key" in found[("token", "/plugins/token/config/public_key")]
    assert found[("writers", "/plugins/writers/config/scope")] == "unknown key 'scope'"
    assert "not-a-digest" not in json.dumps(report)


def test_docs_document_the_three_plugins(tmp_path: Path) -> None:
    result = runner.invoke(app, ["docs"])
    assert result.exit_code == 0
    text = result.stdout
    for name in ("api-key", "jwt", "authorize"):
        assert f"\n## {name}\n" in text
    section = {name: text.split(f"\n## {name}\n")[1].split("\n## ")[0] for name in ("api-key", "jwt", "authorize")}
    assert "| Capabilities | `principal`, `auth.api-key` |" in section["api-key"]
    assert "| `keys` | list of ApiKeyEntry | yes |" in section["api-key"]
    assert (
        "| `secret` | string \\| null | no | `null` | Shared secret for HS256/HS384/HS512. **Secret:**"
        in section["jwt"]
    )
    assert '| `required_claims` | list of string | no | `["exp"]` |' in section["jwt"]
    assert "| `jwks_min_refresh_s` |" in section["jwt"] and "| `leeway_s` |" in section["jwt"]
    assert "| Requires capabilities | `principal` (from an earlier stage) |" in section["authorize"]
