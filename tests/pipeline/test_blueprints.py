from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import BlueprintError
from contracts.names import Phase
from pipeline import blueprints
from tests.conftest import EXAMPLE, write_blueprint


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
