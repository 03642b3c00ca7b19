"""The gateway's request events on ``BW_EVENTS``: received, each stage completed, responded; credentials masked,
bodies only when an endpoint opts in; every loss of the publisher counted in health."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from nats.aio.client import Client
from pydantic import BaseModel

from backworks.contracts.events import RequestReceived, RequestResponded, SecurityEvent, StageCompleted
from backworks.contracts.names import (
    REQUEST_RECEIVED_SUBJECT,
    REQUEST_RESPONDED_SUBJECT,
    STAGE_COMPLETED_SUBJECT,
)
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.secrets import MASK
from tests.events import of_request, stream_events
from tests.files import write_blueprint
from tests.serving import Gateway, wait_live
from tests.stages import running_stages
from tests.waiting import eventually

KEY = "alice-secret-key-0123456789"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

BLUEPRINT = f"""
name: evented
events: {{stage_completed: true}}
plugins:
  keys:
    type: api-key
    config:
      query: api_key
      keys: [{{consumer: alice, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}}}]
endpoints:
  plain:
    path: /plain
    methods: [POST]
    plugins: [keys]
    handler: {{type: mock, config: {{body: {{said: plain}}}}}}
  bodied:
    path: /bodied
    methods: [POST]
    plugins: [keys]
    events: {{bodies: true}}
    handler: {{type: mock, config: {{body: {{said: bodied}}}}}}
"""


@pytest.fixture
def evented(tmp_path: Path) -> LoadedBlueprint:
    return blueprints.load(write_blueprint(tmp_path, BLUEPRINT))


async def test_a_request_gives_received_stage_completed_and_responded_events(
    gateway: Gateway, nats_client: Client, evented: LoadedBlueprint
) -> None:
    js = broker.jetstream(nats_client)
    async with running_stages(evented, nats_client), gateway(evented) as (http, state):
        await wait_live(state, replicas={"keys": 1, "plain-handler": 1})
        headers = {"x-request-id": "req-plain", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        response = await http.post(f"/plain?api_key={KEY}&x=1", content=f"secret {KEY}", headers=headers)
        assert response.status_code == 200
        await eventually(lambda: state.forwarder is not None and state.forwarder.events.confirmed >= 4)

        async def replica_events() -> dict[str, int]:
            health = (await http.get("/_backworks/health")).json()
            found: dict[str, int] = health["stages"]["keys.request"]["replicas"][0]["events"]
            return found

        async def heartbeat_shows_the_decision() -> bool:
            return (await replica_events()).get("confirmed", 0) >= 1  # the stage's security decision

        await eventually(heartbeat_shows_the_decision)
        health = (await http.get("/_backworks/health")).json()
    events = of_request(await stream_events(js), "req-plain")
    subjects = [subject for subject, _ in events if not subject.startswith("bw.evt.security.")]  # from the stage
    assert subjects[0] == REQUEST_RECEIVED_SUBJECT
    assert subjects.count(STAGE_COMPLETED_SUBJECT) == 2
    assert subjects[-1] == REQUEST_RESPONDED_SUBJECT
    assert len({event["event_id"] for _, event in events}) == len(events)
    assert all(event["trace_id"] == TRACE for _, event in events if event.get("v") == 1)
    flow = [(subject, event) for subject, event in events if subject in subjects]
    received = flow[0][1]
    assert received["route"] == "plain"
    assert received["query"] == [["api_key", MASK], ["x", "1"]]
    assert received["body"] is None
    stages = {event["stage"]: event["ms"] for subject, event in events if subject == STAGE_COMPLETED_SUBJECT}
    assert set(stages) == {"keys.request", "plain-handler.request"}
    assert all(ms >= 0 for ms in stages.values())
    responded = flow[-1][1]
    assert (responded["status"], responded["consumer"], responded["degraded"]) == (200, "alice", [])
    assert responded["total_ms"] > 0 and responded["body"] is None
    assert KEY not in str(events)
    assert responded["stages"] == [{"stage": s, "ms": stages[s]} for s in ("keys.request", "plain-handler.request")]
    contracts: dict[str, type[BaseModel]] = {
        REQUEST_RECEIVED_SUBJECT: RequestReceived,
        STAGE_COMPLETED_SUBJECT: StageCompleted,
        REQUEST_RESPONDED_SUBJECT: RequestResponded,
        "bw.evt.security.allowed": SecurityEvent,
    }
    for subject, event in events:
        contracts[subject].model_validate(event)  # what the gateway builds as dicts is what the contracts say
    gateway_events = health["events"]["gateway"]
    assert gateway_events["lost"] == 0 and gateway_events["emitted"] >= 4
    assert health["events"]["lost_by_replicas"] == 0


async def test_an_endpoint_that_opts_in_gets_bodies_with_credentials_masked(
    gateway: Gateway, nats_client: Client, evented: LoadedBlueprint
) -> None:
    js = broker.jetstream(nats_client)
    async with running_stages(evented, nats_client), gateway(evented) as (http, state):
        await wait_live(state, replicas={"keys": 1, "bodied-handler": 1})
        response = await http.post(
            f"/bodied?api_key={KEY}", content=f"note from {KEY}", headers={"x-request-id": "req-bodied"}
        )
        assert response.status_code == 200
        await eventually(lambda: state.forwarder is not None and state.forwarder.events.confirmed >= 4)
    events = dict(of_request(await stream_events(js), "req-bodied"))
    assert events[REQUEST_RECEIVED_SUBJECT]["body"] == f"note from {MASK}"
    assert events[REQUEST_RESPONDED_SUBJECT]["body"] == '{"said": "bodied"}'


async def test_a_refused_request_still_responds_an_event(
    gateway: Gateway, nats_client: Client, evented: LoadedBlueprint
) -> None:
    js = broker.jetstream(nats_client)
    async with running_stages(evented, nats_client), gateway(evented) as (http, state):
        await wait_live(state, replicas={"keys": 1, "plain-handler": 1})
        response = await http.post("/plain?api_key=wrong-key-000000", headers={"x-request-id": "req-denied"})
        assert response.status_code == 401
        await eventually(lambda: state.forwarder is not None and state.forwarder.events.confirmed >= 2)
    events = dict(of_request(await stream_events(js), "req-denied"))
    assert events[REQUEST_RESPONDED_SUBJECT]["status"] == 401
    assert events[REQUEST_RESPONDED_SUBJECT]["consumer"] is None
    assert events["bw.evt.security.denied"]["route"] == "plain"


async def test_events_can_be_switched_off_for_a_comparison(
    gateway: Gateway, nats_client: Client, evented: LoadedBlueprint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKWORKS_EVENTS", "off")
    js = broker.jetstream(nats_client)
    async with running_stages(evented, nats_client), gateway(evented) as (http, state):
        await wait_live(state, replicas={"keys": 1, "plain-handler": 1})
        response = await http.post(f"/plain?api_key={KEY}", headers={"x-request-id": "req-off"})
        assert response.status_code == 200
        assert state.forwarder is not None and state.forwarder.events.emitted == 0
    subjects = {subject for subject, _ in of_request(await stream_events(js), "req-off")}
    assert subjects == {"bw.evt.security.allowed"}  # security decisions are published either way


async def test_by_default_a_request_costs_two_events_with_every_stage_duration_in_the_second(
    gateway: Gateway, nats_client: Client, tmp_path: Path
) -> None:
    default = BLUEPRINT.replace("events: {stage_completed: true}\n", "")
    assert "events:" not in default.split("plugins:")[0]
    loaded = blueprints.load(write_blueprint(tmp_path, default))
    js = broker.jetstream(nats_client)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, state):
        await wait_live(state, replicas={"keys": 1, "plain-handler": 1})
        response = await http.post(f"/plain?api_key={KEY}", headers={"x-request-id": "req-compact"})
        assert response.status_code == 200
        await eventually(lambda: state.forwarder is not None and state.forwarder.events.confirmed >= 2)
    events = dict(of_request(await stream_events(js), "req-compact"))
    assert set(events) == {REQUEST_RECEIVED_SUBJECT, REQUEST_RESPONDED_SUBJECT, "bw.evt.security.allowed"}
    assert [s["stage"] for s in events[REQUEST_RESPONDED_SUBJECT]["stages"]] == [
        "keys.request",
        "plain-handler.request",
    ]
