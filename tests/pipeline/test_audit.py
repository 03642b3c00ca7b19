"""Security decisions reach the event stream: who called which route, allowed or denied, and why."""

from __future__ import annotations

from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.envelope import Principal
from backworks.contracts.events import SecurityDecision, SecurityEvent
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.audit import AuditLevel, events_since, noted, record_decision
from backworks.plugins.api_key import digest
from backworks.sdk import request
from tests.events import stream_events
from tests.files import write_blueprint
from tests.serving import serving
from tests.stages import running_stages
from tests.waiting import eventually

ALICE_KEY, BOB_KEY = "alice-key-0123456789", "bob-key-9876543210"
BLUEPRINT = f"""
name: audited
defaults: {{timeout_ms: 5000}}
plugins:
  keys:
    type: api-key
    config:
      keys:
        - {{consumer: alice, sha256: {digest(ALICE_KEY)}, scopes: [notes:write]}}
        - {{consumer: bob, sha256: {digest(BOB_KEY)}}}
  writers: {{type: authorize, config: {{scopes: [notes:write], audit: denied}}}}
endpoints:
  notes:
    path: /notes
    methods: [POST]
    plugins: [keys, writers]
    handler: {{type: mock, config: {{body: ok}}}}
"""


def test_levels_decide_which_decisions_are_noted() -> None:
    envelope = request("POST", "/notes", route="notes")
    record_decision(envelope, "authorize", SecurityDecision.ALLOWED, "fine", level=AuditLevel.DENIED)
    record_decision(envelope, "authorize", SecurityDecision.DENIED, "no", level=AuditLevel.NONE)
    assert noted(envelope) == 0
    envelope.principal = Principal(consumer="bob")
    record_decision(envelope, "authorize", SecurityDecision.DENIED, "missing scope(s): x", status=403)
    (event,) = events_since(envelope, 0)
    assert (event.decision, event.plugin, event.consumer, event.status) == ("denied", "authorize", "bob", 403)
    assert (event.route, event.method, event.path, event.reason) == ("notes", "POST", "/notes", "missing scope(s): x")
    assert events_since(envelope, 1) == []


async def test_each_security_stage_publishes_its_decisions(
    nats_server: EmbeddedNats, nats_client: Client, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    seen: list[tuple[str, SecurityEvent]] = []

    async def collect(msg: Msg) -> None:
        seen.append((msg.subject, SecurityEvent.model_validate_json(msg.data)))

    subscription = await nats_client.subscribe("bw.evt.security.>", cb=collect)
    async with running_stages(loaded, nats_client), serving(loaded, nats_server) as (http, _):
        assert (await http.post("/notes")).status_code == 401
        assert (await http.post("/notes", headers={"x-api-key": BOB_KEY})).status_code == 403
        assert (await http.post("/notes", headers={"x-api-key": ALICE_KEY})).status_code == 200
        await eventually(lambda: len(seen) == 4)
    await subscription.unsubscribe()
    summary = [(subject, e.stage, e.consumer, e.status, e.reason) for subject, e in seen]
    # Each stage publishes through its own batching publisher: events of different stages may arrive in any order.
    assert sorted(summary, key=repr) == sorted(
        [
            ("bw.evt.security.denied", "keys.request", None, 401, "missing API key: send it in the 'x-api-key' header"),
            ("bw.evt.security.allowed", "keys.request", "bob", None, "known API key"),
            ("bw.evt.security.denied", "writers.request", "bob", 403, "missing scope(s): notes:write"),
            ("bw.evt.security.allowed", "keys.request", "alice", None, "known API key"),
        ],
        key=repr,
    ), "writers audits refusals only"
    assert all(event.route == "notes" and event.method == "POST" and event.request_id for _, event in seen)
    assert ALICE_KEY not in str(seen) and BOB_KEY not in str(seen)
    events = await stream_events(broker.jetstream(nats_client))
    security = [subject for subject, _ in events if subject.startswith("bw.evt.security.")]
    assert len(security) == 4, "captured by the event stream"
