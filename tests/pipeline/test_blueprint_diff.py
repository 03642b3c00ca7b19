"""What ``apply`` reports as changed between two blueprints."""

from __future__ import annotations

from pathlib import Path

from backworks.pipeline import blueprints
from backworks.pipeline.blueprint_diff import diff
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.files import write_blueprint

BASE = """name: api
plugins:
  tag: {type: response-headers, config: {set: {x-rev: "1"}}}
  stamp: {type: request-headers, config: {set: {x-stamp: "1"}}}
endpoints:
  hello: {path: /hello, plugins: [tag], handler: {type: mock, config: {body: one}}}
  bye: {path: /bye, plugins: [stamp], handler: {type: mock, config: {body: bye}}}
"""


def load(tmp_path: Path, text: str, name: str) -> LoadedBlueprint:
    return blueprints.load(write_blueprint(tmp_path, text, name))


def test_the_same_blueprint_has_no_changes(tmp_path: Path) -> None:
    changes = diff(load(tmp_path, BASE, "a.yaml"), load(tmp_path, BASE, "b.yaml"))
    assert changes.empty
    assert changes.summary() == "no changes"
    assert changes.lines() == []


def test_instances_and_endpoints_added_removed_and_changed(tmp_path: Path) -> None:
    new = """name: api
plugins:
  tag: {type: response-headers, config: {set: {x-rev: "2"}}}
  extra: {type: request-headers, config: {set: {x-extra: "1"}}}
endpoints:
  hello: {path: /hello, plugins: [tag, extra], handler: {type: mock, config: {body: one}}}
  news: {path: /news, handler: {type: mock, config: {body: news}}}
"""
    changes = diff(load(tmp_path, BASE, "a.yaml"), load(tmp_path, new, "b.yaml"))
    assert changes.instances_added == ("extra", "news-handler")
    assert changes.instances_removed == ("bye-handler", "stamp")
    assert changes.instances_changed == ("tag",)
    assert changes.endpoints_added == ("news",)
    assert changes.endpoints_removed == ("bye",)
    assert changes.endpoints_changed == ("hello",), "its chain gained a stage"
    assert changes.restart_only == ()
    assert changes.summary() == "+2 instances, -2 instances, ~1 instance, +1 endpoint, -1 endpoint, ~1 endpoint"
    assert "  + instance extra (added)" in changes.lines()
    assert "  - endpoint bye (removed)" in changes.lines()


def test_a_handler_config_change_is_its_instance_not_its_route(tmp_path: Path) -> None:
    new = BASE.replace("body: one", "body: two")
    changes = diff(load(tmp_path, BASE, "a.yaml"), load(tmp_path, new, "b.yaml"))
    assert changes.instances_changed == ("hello-handler",)
    assert changes.endpoints_changed == ()


def test_a_route_timeout_or_path_change_is_an_endpoint_change(tmp_path: Path) -> None:
    new = BASE.replace("path: /bye,", "path: /goodbye, timeout_ms: 900,")
    changes = diff(load(tmp_path, BASE, "a.yaml"), load(tmp_path, new, "b.yaml"))
    assert changes.endpoints_changed == ("bye",)
    assert changes.instances_changed == ()


def test_sections_a_running_fleet_does_not_reload_are_reported(tmp_path: Path) -> None:
    new = BASE.replace("name: api\n", "name: api\ngateway: {max_body_bytes: 10}\n")
    changes = diff(load(tmp_path, BASE, "a.yaml"), load(tmp_path, new, "b.yaml"))
    assert changes.restart_only == ("gateway",)
    assert not changes.empty
    assert changes.lines() == ["  ! gateway changed: takes effect when the services restart"]
