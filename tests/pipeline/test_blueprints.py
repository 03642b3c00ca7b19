from __future__ import annotations

from pathlib import Path

import pytest

from backworks.contracts.errors import BlueprintError, ConfigIssue
from backworks.contracts.names import Phase
from backworks.pipeline import blueprints
from tests.files import EXAMPLE, write_blueprint
from tests.samples import PROCESSOR_FACTORY_SOURCE, write_plugin_file


def issues_of(path: Path) -> list[str]:
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(path)
    return [issue.render() for issue in caught.value.issues]


def test_example_itinerary_is_request_handler_response() -> None:
    loaded = blueprints.load(EXAMPLE)
    stages = loaded.itinerary("hello")
    assert [(s.instance, s.phase) for s in stages] == [
        ("stamp", Phase.REQUEST),
        ("hello-handler", Phase.REQUEST),
        ("secure", Phase.RESPONSE),
    ]
    assert [s.critical for s in stages] == [False, True, False]


def test_response_enhancers_run_in_reverse_chain_order(tmp_path: Path) -> None:
    path = write_blueprint(
        tmp_path,
        """
name: api
defaults: {plugins: [outer]}
plugins:
  outer: {type: response-headers}
  inner: {type: response-headers}
endpoints:
  e: {path: /x, plugins: [inner], handler: {type: mock}}
""",
    )
    stages = blueprints.load(path).itinerary("e")
    assert [s.label for s in stages] == ["e-handler.request", "inner.response", "outer.response"]


def test_every_problem_is_reported_with_line_pointer_and_plugin(tmp_path: Path) -> None:
    path = write_blueprint(
        tmp_path,
        """name: api
plugins:
  stamp: {type: request-headers, config: {set: {x: 1}, bogus: true}}
  ghost: {type: no-such-plugin}
endpoints:
  e:
    path: /x
    plugins: [stamp, missing]
    handler: {type: mock, config: {status: "many"}}
""",
    )
    rendered = issues_of(path)
    text = "\n".join(rendered)
    assert f"{path}:3:" in text and "/plugins/stamp/config/set/x [plugin stamp]" in text
    assert "/plugins/stamp/config/bogus [plugin stamp]: unknown key 'bogus'" in text
    assert "/plugins/ghost/type [plugin ghost]: unknown plugin type 'no-such-plugin'" in text
    assert f"{path}:8:" in text and "/endpoints/e/plugins/1: unknown plugin instance 'missing'" in text
    assert "/endpoints/e/handler/config/status [plugin e-handler]" in text
    assert len(rendered) == 5


def test_unknown_top_level_key_points_at_the_key(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, "name: api\nendpionts: {}\nendpoints:\n  e: {path: /x, handler: {type: mock}}\n")
    (issue,) = issues_of(path)
    assert issue.startswith(f"{path}:2:1: /endpionts: unknown key 'endpionts'")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, "name: api\nendpoints:\n  e: {path: /x\n")
    (issue,) = issues_of(path)
    assert "YAML syntax error" in issue
    assert issue.startswith(f"{path}:4:")


def test_handler_in_chain_and_non_handler_as_handler_are_errors(tmp_path: Path) -> None:
    path = write_blueprint(
        tmp_path,
        """name: api
plugins:
  h: {type: mock}
endpoints:
  e: {path: /x, plugins: [h], handler: {type: request-headers}}
""",
    )
    text = "\n".join(issues_of(path))
    assert "'h' is a handler" in text
    assert "is a request-processor, not a handler" in text


def test_duplicate_routes_are_errors(tmp_path: Path) -> None:
    path = write_blueprint(
        tmp_path,
        """name: api
endpoints:
  a: {path: "/x/{id}", handler: {type: mock}}
  b: {path: "/x/{key}", handler: {type: mock}}
""",
    )
    assert any("already served by endpoint 'a'" in issue for issue in issues_of(path))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (issue,) = issues_of(tmp_path / "nope.yaml")
    assert "cannot read blueprint" in issue


LOCAL_PLUGINS = (
    PROCESSOR_FACTORY_SOURCE
    + """
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from backworks import Security


class KeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr
    header: str = "x-api-key"
    retries: int = Field(default=1, ge=0)


class KeyCheck(Security[KeyConfig]):
    name = "key-check"
    version = "1.4.0"
    description = "Checks a token."
    Config = KeyConfig

    async def authenticate(self, envelope: Envelope) -> Action:
        return Continue(envelope)


Rbac = processor("rbac", "1.2.0", key_check=">=1.0,<2")
Audit = processor("audit", key_check=">=2")
Ping = processor("ping", pong="")
Pong = processor("pong", ping="")
"""
)


def local_blueprint(tmp_path: Path, body: str) -> Path:
    write_plugin_file(tmp_path, "security.py", LOCAL_PLUGINS)
    return write_blueprint(tmp_path, "name: api\nplugin_dirs: [local]\n" + body)


def issues(path: Path) -> list[ConfigIssue]:
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(path)
    return caught.value.issues


def test_plugin_dirs_add_plugins_and_dependencies_run_first(tmp_path: Path) -> None:
    path = local_blueprint(
        tmp_path,
        """plugins:
  acl: {type: rbac}
  key: {type: key-check, config: {token: t0ps3cret}}
endpoints:
  listed: {path: /a, plugins: [acl, key], handler: {type: mock}}
  implied: {path: /b, plugins: [acl], handler: {type: mock}}
""",
    )
    loaded = blueprints.load(path)
    assert loaded.chain("listed") == ["key", "acl"], "the dependency moves before its dependent"
    assert loaded.chain("implied") == ["key", "acl"], "the only declared instance of a dependency is added"
    assert [s.label for s in loaded.itinerary("implied")] == ["key.request", "acl.request", "implied-handler.request"]
    assert loaded.catalog is not None and loaded.catalog.plugins["rbac"].path == str(tmp_path / "local" / "security.py")
    assert loaded.itinerary("implied")[0].critical, "security plugins are critical by default"


def test_missing_dependency_is_precise(tmp_path: Path) -> None:
    endpoints = "endpoints:\n  e: {path: /a, plugins: [acl], handler: {type: mock}}\n"
    path = local_blueprint(tmp_path, "plugins:\n  acl: {type: rbac}\n" + endpoints)
    (issue,) = issues(path)
    assert (issue.pointer, issue.line, issue.column, issue.plugin) == ("/endpoints/e/plugins/0", 6, 27, "acl")
    assert issue.message == (
        "endpoint 'e': 'acl' (rbac) needs plugin 'key-check' (>=1.0,<2), but the blueprint declares no instance of it: "
        "add one under /plugins"
    )


def test_version_conflict_and_cycle_name_their_chains(tmp_path: Path) -> None:
    path = local_blueprint(
        tmp_path,
        """plugins:
  audit: {type: audit}
  key: {type: key-check, config: {token: t0ps3cret}}
  ping: {type: ping}
  pong: {type: pong}
endpoints:
  e: {path: /a, plugins: [key, audit, ping], handler: {type: mock}}
""",
    )
    found = issues(path)
    by_plugin = {issue.plugin: issue for issue in found}
    assert len(found) == len(by_plugin) == 3
    conflict = by_plugin["audit"]
    assert (conflict.pointer, conflict.line, conflict.column) == ("/plugins/audit/type", 4, 17)
    assert conflict.message.startswith(
        "version conflict audit -> key-check: audit 1.0.0 needs key-check >=2 but key-check 1.4.0 is installed"
    )
    assert (by_plugin["ping"].pointer, by_plugin["ping"].line) == ("/plugins/ping/type", 6)
    assert by_plugin["ping"].message == "dependency cycle: ping -> pong -> ping; remove one of these dependencies"
    assert by_plugin["pong"].message == "dependency cycle: pong -> ping -> pong; remove one of these dependencies"


def test_bad_config_types_point_at_the_value_and_hide_secrets(tmp_path: Path) -> None:
    path = local_blueprint(
        tmp_path,
        """plugins:
  key:
    type: key-check
    config: {token: 12345678, header: [x], retries: -1, extra: 1}
endpoints:
  e: {path: /a, plugins: [key], handler: {type: mock}}
""",
    )
    found = {issue.pointer: issue for issue in issues(path)}
    assert set(found) == {"/plugins/key/config/token", "/plugins/key/config/header",
                          "/plugins/key/config/retries", "/plugins/key/config/extra"}  # fmt: skip
    assert found["/plugins/key/config/header"].message == "['x'] is not of type 'string'"
    assert found["/plugins/key/config/retries"].message == "-1 is less than the minimum of 0"
    assert (found["/plugins/key/config/retries"].line, found["/plugins/key/config/retries"].column) == (6, 53)
    assert found["/plugins/key/config/extra"].message == "unknown key 'extra'"
    assert (found["/plugins/key/config/extra"].line, found["/plugins/key/config/extra"].column) == (6, 57)
    token = found["/plugins/key/config/token"]
    assert "12345678" not in token.message and "value hidden" in token.message and token.plugin == "key"


def test_unknown_plugin_suggests_a_close_name(tmp_path: Path) -> None:
    endpoints = "endpoints:\n  e: {path: /a, handler: {type: mock}}\n"
    path = local_blueprint(tmp_path, "plugins:\n  acl: {type: rbca}\n" + endpoints)
    (issue,) = issues(path)
    assert (issue.pointer, issue.line, issue.column, issue.plugin) == ("/plugins/acl/type", 4, 15, "acl")
    assert issue.message.startswith("unknown plugin type 'rbca' (did you mean 'rbac'?); installed: ")


def test_broken_plugin_files_are_reported_at_their_plugin_dir(tmp_path: Path) -> None:
    write_plugin_file(tmp_path, "oops.py", "x = (\n")
    path = write_blueprint(
        tmp_path, "name: api\nplugin_dirs: [local, missing]\nendpoints:\n  e: {path: /a, handler: {type: mock}}\n"
    )
    first, second = issues(path)
    assert (first.pointer, first.line) == ("/plugin_dirs/0", 2)
    assert f"cannot import plugin file {tmp_path / 'local' / 'oops.py'}:1: SyntaxError" in first.message
    assert (second.pointer, second.column) == ("/plugin_dirs/1", 22) and "does not exist" in second.message


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, "name: api\nendpoints:\n  e: {path: /a, handler: {type: mock}}\nname: other\n")
    (issue,) = issues(path)
    assert (issue.pointer, issue.line, issue.column) == ("/name", 4, 1)
    assert issue.message == "duplicate key 'name' (first at line 1); YAML keeps only the last"
