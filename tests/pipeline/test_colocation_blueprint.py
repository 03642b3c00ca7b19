"""``colocate:`` in a blueprint: validation, itineraries, the stall watch's expectation, and what `up` starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backworks.contracts.envelope import Stage
from backworks.contracts.errors import BlueprintError
from backworks.contracts.names import Phase
from backworks.local.up import children, plan
from backworks.pipeline import blueprints
from backworks.pipeline.stalls import expected_hold_ms
from tests.backworks.test_plugin_commands import invoke
from tests.files import write_blueprint

GROUPED = """name: grouped
plugins:
  a: {type: request-headers, colocate: cheap, replicas: 2, timeout_ms: 100, config: {set: {x-a: "1"}}}
  b: {type: request-headers, colocate: cheap, timeout_ms: 200, config: {set: {x-b: "1"}}}
  alone: {type: request-headers, timeout_ms: 300, config: {set: {x-alone: "1"}}}
  c: {type: response-headers, colocate: cheap, timeout_ms: 400, config: {set: {x-c: "1"}}}
endpoints:
  e: {path: /e, plugins: [a, b, alone, c], handler: {type: mock, colocate: cheap, timeout_ms: 500, config: {body: ok}}}
"""


def test_the_itinerary_names_each_stage_s_group_and_groups_list_their_members(tmp_path: Path) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, GROUPED))
    assert [(s.label, s.colocate) for s in loaded.itinerary("e")] == [
        ("a.request", "cheap"), ("b.request", "cheap"), ("alone.request", None), ("e-handler.request", "cheap"),
        ("c.response", "cheap"),
    ]  # fmt: skip
    assert loaded.model.groups() == {"cheap": ["a", "b", "c", "e-handler"]}


def test_a_forwarder_expects_a_group_stage_held_for_the_whole_run_of_group_stages_after_it(tmp_path: Path) -> None:
    itinerary = blueprints.load(write_blueprint(tmp_path, GROUPED)).itinerary("e")
    assert expected_hold_ms(itinerary, 0) == 100 + 200, "a and b, up to the stage outside the group"
    assert expected_hold_ms(itinerary, 1) == 200
    assert expected_hold_ms(itinerary, 2) == 300, "not co-located: its own time limit"
    assert expected_hold_ms(itinerary, 3) == 500 + 400, "the handler, then c in memory"
    assert expected_hold_ms([Stage(instance="x", phase=Phase.REQUEST, timeout_ms=70)], 0) == 70


def test_up_starts_one_process_per_group_replica_as_many_as_its_most_replicated_member(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, GROUPED)
    loaded = blueprints.load(path)
    counts = {name: item.spec.replicas for name, item in loaded.instances.items()}
    decided = plan(loaded, str(path), ["nats://127.0.0.1:1"], "127.0.0.1", 0, 0, counts)
    _, services = children(decided)
    assert [child.name for child in services] == ["gateway", "serve alone", "serve cheap #1", "serve cheap #2"]
    assert services[-1].args[:2] == ["serve", "cheap"]
    assert decided.replicas == {"a": 2, "b": 2, "alone": 1, "c": 2, "e-handler": 2}, "what health must show live"


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(write_blueprint(tmp_path, text))
    return [issue.render() for issue in caught.value.issues]


def test_a_group_named_like_an_instance_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, GROUPED.replace("colocate: cheap", "colocate: alone"))
    assert any("/plugins/a/colocate" in line and "has the name of a plugin instance" in line for line in found), found


def test_members_must_agree_on_the_process_limits(tmp_path: Path) -> None:
    text = GROUPED.replace("replicas: 2,", "replicas: 2, limits: {memory_mb: 256},")
    found = problems(tmp_path, text)
    assert any("/plugins/a/limits/memory_mb" in line and "same limits.memory_mb" in line for line in found), found
    agreed = text.replace("timeout_ms: 200,", "timeout_ms: 200, limits: {memory_mb: 256},")
    agreed = agreed.replace("timeout_ms: 400,", "timeout_ms: 400, limits: {memory_mb: 256},")
    agreed = agreed.replace("timeout_ms: 500,", "timeout_ms: 500, limits: {memory_mb: 256},")
    assert blueprints.load(write_blueprint(tmp_path, agreed, "agreed.yaml")).model.groups()["cheap"]


def test_plugins_order_shows_each_stage_s_group_and_the_groups(tmp_path: Path) -> None:
    path = write_blueprint(tmp_path, GROUPED)
    code, out, _ = invoke("plugins", "order", str(path), "--format", "json")
    assert code == 0 and json.loads(out)["groups"] == {"cheap": ["a", "b", "c", "e-handler"]}
    code, text, _ = invoke("plugins", "order", str(path))
    assert code == 0
    assert "e: a.request [cheap] -> b.request [cheap] -> alone.request -> e-handler.request [cheap] -> " in text
    assert "co-located [cheap]: a, b, c, e-handler" in text
