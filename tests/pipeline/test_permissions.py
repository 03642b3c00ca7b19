"""The identities and permissions derived from a blueprint (pure: no broker)."""

from __future__ import annotations

from pathlib import Path

from backworks.contracts.envelope import Stage
from backworks.contracts.names import (
    CONFIG_PROBE_SUBJECT,
    FENCE_SUBJECT,
    REPLY_RESEND_SUBJECT,
    Phase,
    max_deliveries_advisory,
)
from backworks.pipeline import blueprints
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.permissions import (
    ADMIN,
    GATEWAY,
    TAP,
    Role,
    group_identity,
    identities,
    next_hops,
    reachable,
    stage_identity,
)
from tests.files import write_blueprint

# guard (critical, request) -> note (optional, request) -> handler (critical) -> tag.response (optional)
CHAIN = """
name: chain
plugins:
  note:  {type: request-headers, config: {set: {x-note: "1"}}}
  guard: {type: request-headers, critical: true, config: {set: {x-guard: "1"}}}
  tag:   {type: response-headers, config: {set: {x-tag: "1"}}}
endpoints:
  guarded:
    path: /guarded
    plugins: [guard, note, tag]
    handler: {type: mock, config: {status: 200}}
  open:
    path: /open
    plugins: [note]
    handler: {type: mock, config: {status: 204}}
"""


def load(tmp_path: Path, text: str = CHAIN) -> LoadedBlueprint:
    return blueprints.load(write_blueprint(tmp_path, text))


def stage(instance: str, critical: bool = False, phase: Phase = Phase.REQUEST) -> Stage:
    return Stage(instance=instance, phase=phase, critical=critical)


def test_a_forwarder_reaches_each_stage_up_to_and_including_the_first_critical_one() -> None:
    itinerary = [stage("a"), stage("b"), stage("c", critical=True), stage("d")]
    assert reachable(itinerary, 0).stages == {0, 1, 2}
    assert reachable(itinerary, 3).stages == {3}
    assert reachable(itinerary, 4).stages == frozenset()


def test_a_request_stage_may_jump_to_the_response_stages_when_it_answers() -> None:
    itinerary = [stage("a"), stage("h", critical=True), stage("r", phase=Phase.RESPONSE)]
    assert next_hops(itinerary, 0).stages == {1, 2}, "on to the handler, or straight to the response stage"
    assert next_hops(itinerary, 1).stages == {2}
    assert next_hops(itinerary, 2).stages == frozenset()


def test_every_service_gets_its_own_identity(tmp_path: Path) -> None:
    found = identities(load(tmp_path))
    assert set(found) == {
        ADMIN, GATEWAY, TAP, "stage-note", "stage-guard", "stage-tag", "stage-guarded-handler", "stage-open-handler",
    }  # fmt: skip
    assert found[GATEWAY].role is Role.GATEWAY and found["stage-note"].role is Role.STAGE
    assert found["stage-note"].inbox_prefix == "_BW_INBOX.stage-note"
    assert found[ADMIN].permissions.publish == (">",)


def test_the_gateway_publishes_only_the_first_hops(tmp_path: Path) -> None:
    gateway = identities(load(tmp_path))[GATEWAY].permissions
    stage_subjects = {s for s in gateway.publish if s.startswith("bw.stage.") and s != FENCE_SUBJECT}
    # /guarded starts at the critical guard (nothing can be skipped); /open at note, or its handler when note is out.
    assert stage_subjects == {"bw.stage.guard.request", "bw.stage.note.request", "bw.stage.open-handler.request"}
    assert "_INBOX.bw.*.*" in gateway.subscribe
    assert "_BW_INBOX.gateway.>" in gateway.subscribe
    assert not any(subject.startswith("bw.stage") for subject in gateway.subscribe)
    assert not any(subject == ">" or subject.startswith("$KV.") for subject in gateway.publish), "writes no KV"


def test_a_stage_publishes_only_to_the_stages_that_can_follow_it(tmp_path: Path) -> None:
    found = identities(load(tmp_path))

    def targets(instance: str) -> set[str]:
        publish = found[stage_identity(instance)].permissions.publish
        return {s for s in publish if s.startswith("bw.stage.") and s != FENCE_SUBJECT}  # the fence feeds no stage

    # guard (critical) -> note (optional) -> guarded-handler; answering early jumps to tag.response.
    assert targets("guard") == {
        "bw.stage.note.request", "bw.stage.guarded-handler.request", "bw.stage.tag.response",
    }  # fmt: skip
    # note is in both endpoints; never back to guard.
    assert targets("note") == {
        "bw.stage.guarded-handler.request", "bw.stage.open-handler.request", "bw.stage.tag.response",
    }  # fmt: skip
    assert targets("guarded-handler") == {"bw.stage.tag.response"}
    assert targets("open-handler") == set()
    assert targets("tag") == set()


def test_a_stage_consumes_and_writes_only_what_is_its_own(tmp_path: Path) -> None:
    note = identities(load(tmp_path))["stage-note"].permissions
    assert "$JS.API.CONSUMER.MSG.NEXT.BW_PIPELINE.bw-note-request" in note.publish
    assert "$JS.ACK.BW_PIPELINE.bw-note-request.>" in note.publish
    assert "$JS.API.CONSUMER.CREATE.BW_PIPELINE.bw-note-request.bw.stage.note.request" in note.publish
    assert {subject for subject in note.publish if subject.startswith("$KV.")} == {
        "$KV.bw_registry.note.>", "$KV.bw_breakers.note.>", "$KV.bw_ratelimit.note.>", "$KV.bw_cache.note.>",
    }, "its own heartbeats, breaker records and plugin stores only"  # fmt: skip
    assert not any("bw-guard-request" in subject for subject in note.publish), "nothing of the stage before it"
    assert not any(subject.startswith(("bw.stage", "_INBOX.bw")) for subject in note.subscribe)
    assert not any("STREAM.CREATE" in s or "STREAM.UPDATE" in s or "STREAM.DELETE" in s for s in note.publish)


def test_only_the_admin_may_declare(tmp_path: Path) -> None:
    found = identities(load(tmp_path))
    for name, identity in found.items():
        declares = any(s in (">", "$JS.API.>") or ".STREAM.CREATE." in s for s in identity.permissions.publish)
        assert declares == (name == ADMIN), name


def test_the_tap_reads_the_event_stream_and_touches_the_pipeline_only_to_read_consumer_figures(tmp_path: Path) -> None:
    tap = identities(load(tmp_path))[TAP].permissions
    pipeline = [s for s in tap.publish if "BW_PIPELINE" in s]
    assert pipeline == ["$JS.API.CONSUMER.INFO.BW_PIPELINE.*"]  # never a message: they hold bodies and credentials
    assert not any(s.startswith(("bw.stage.", "bw.dlq.", "_INBOX.")) for s in tap.publish)
    assert not any(s.startswith("$KV.") for s in tap.publish), "reads KV, never writes it"
    assert [s for s in tap.publish if s.startswith("bw.evt.")] == ["bw.evt.alert.*"]
    assert tap.subscribe == ("_BW_INBOX.tap.>", "bw.tap.report")
    assert tap.responses and "allow_responses" in identities(load(tmp_path))[TAP].as_dict()


GROUPED = """
name: grouped
plugins:
  note:  {type: request-headers, colocate: cheap, config: {set: {x-note: "1"}}}
  guard: {type: request-headers, critical: true, config: {set: {x-guard: "1"}}}
  tag:   {type: response-headers, colocate: cheap, config: {set: {x-tag: "1"}}}
endpoints:
  guarded:
    path: /guarded
    plugins: [note, guard, tag]
    handler: {type: mock, colocate: cheap, config: {status: 200}}
"""


def test_a_group_may_do_what_each_member_may_except_publish_to_its_own_members(tmp_path: Path) -> None:
    found = identities(load(tmp_path, GROUPED))
    group = found[group_identity("cheap")]
    assert group.role is Role.GROUP and group.name == "group-cheap"
    publish = set(group.permissions.publish)
    for member in ("note", "tag", "guarded-handler"):
        durable = f"bw-{member}-{'response' if member == 'tag' else 'request'}"
        assert f"$JS.API.CONSUMER.MSG.NEXT.BW_PIPELINE.{durable}" in publish, member
        assert f"$JS.ACK.BW_PIPELINE.{durable}.>" in publish, member
        assert f"$KV.bw_registry.{member}.>" in publish and f"$KV.bw_breakers.{member}.>" in publish, member
    # note -> guard leaves the group; the handler hands to tag in memory; only guard's subject is an exit.
    stage_subjects = {s for s in publish if s.startswith("bw.stage.") and s != FENCE_SUBJECT}
    assert stage_subjects == {"bw.stage.guard.request"}
    assert "$KV.bw_registry.guard.>" not in publish, "nothing of the instance outside the group"
    assert group.permissions.subscribe == (
        "_BW_INBOX.group-cheap.>", max_deliveries_advisory("BW_PIPELINE"), CONFIG_PROBE_SUBJECT, REPLY_RESEND_SUBJECT
    )  # fmt: skip
    assert found[stage_identity("note")].permissions.publish, "a member keeps its own identity (served alone)"
