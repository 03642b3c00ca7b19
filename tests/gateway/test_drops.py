"""Every request that ends anywhere but a normal reply is on record: an event with its reason and stage, and a
counter per reason in health (the gateway's own 504, an envelope a stage finds expired)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.events import StageEvent
from backworks.contracts.names import EVENTS_SUBJECTS, Phase
from backworks.pipeline import blueprints
from backworks.pipeline.settlement import Settlement
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

DEADLINE_MS = 1000
BLUEPRINT = f"""name: drops
endpoints:
  slow:
    path: /slow
    timeout_ms: {DEADLINE_MS}
    handler: {{type: mock, timeout_ms: 30000, config: {{body: ok}}}}
"""


async def test_a_gateway_timeout_and_the_expired_envelope_left_behind_are_both_on_record(
    tmp_path: Path, gateway: Gateway, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    events: list[StageEvent] = []

    async def on_event(msg: Msg) -> None:
        events.append(StageEvent.model_validate_json(msg.data))

    await nats_client.subscribe(EVENTS_SUBJECTS, cb=on_event)
    async with running_stages(loaded, nats_client) as hosts, gateway(loaded) as (http, state):
        host = hosts["slow-handler"][0]
        thaw = asyncio.Event()
        decide = host.decide

        async def held(phase: Phase, msg: Msg) -> Settlement:  # a replica that takes the message and stalls
            await thaw.wait()
            return await decide(phase, msg)

        monkeypatch.setattr(host, "decide", held)
        answered = await http.get("/slow")
        assert answered.status_code == 504
        assert state.dropped == {"timeout": 1}
        await eventually(lambda: any(e.kind.value == "timeout" and e.route == "slow" for e in events))
        gateway_event = next(e for e in events if e.kind.value == "timeout")
        assert gateway_event.stage == "slow-handler.request" and not gateway_event.skipped
        assert gateway_event.request_id == answered.headers["x-request-id"]

        thaw.set()  # the replica resumes and finds the envelope past its deadline
        await eventually(lambda: any(e.kind.value == "expired" for e in events))
        expired = next(e for e in events if e.kind.value == "expired")
        assert expired.stage == "slow-handler.request"
        assert expired.request_id == answered.headers["x-request-id"]
        assert host.dropped == {"expired": 1}

        async def health_counts() -> bool:
            body = (await http.get("/_backworks/health")).json()
            return bool(body["dropped"] == {"timeout": 1, "expired": 1})

        await eventually(health_counts)
