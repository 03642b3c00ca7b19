"""A stage that holds an envelope past its time limit: routed around if optional, a 504 naming it if critical.

The replica is live (it heartbeats) but never settles what it receives, as a SIGSTOPped or starved replica
would: its ``decide`` is replaced by one that waits forever. The request deadline is far longer than the
stage's time limit, so a request that waited for the stage would take the whole deadline.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.events import StageEvent
from backworks.contracts.names import DLQ_STREAM, Phase, stage_event_subject
from backworks.contracts.types import FailureKind
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from backworks.pipeline.publisher import stream_sequence
from backworks.pipeline.settlement import Settlement
from backworks.pipeline.stagehost import StageHost
from backworks.pipeline.stalls import STALL_MARGIN
from tests.files import write_blueprint
from tests.serving import serving
from tests.stages import running_stages

DEADLINE_MS = 20_000
STAGE_LIMIT_MS = 200
BOUND = (STAGE_LIMIT_MS / 1000 + STALL_MARGIN) * 10
"""Ten times what routing around should take: generous on a loaded machine, a small part of the deadline."""
BLUEPRINT = f"""name: stalls
defaults: {{timeout_ms: {DEADLINE_MS}}}
plugins:
  stamp: {{type: request-headers, timeout_ms: {STAGE_LIMIT_MS}, config: {{set: {{x-stamped: "yes"}}}}}}
  secure: {{type: response-headers, timeout_ms: {STAGE_LIMIT_MS}, config: {{set: {{x-secure: "yes"}}}}}}
endpoints:
  optional: {{path: /optional, plugins: [stamp, secure], handler: {{type: mock, config: {{body: ok}}}}}}
  critical: {{path: /critical, plugins: [stamp], handler: {{type: mock, timeout_ms: {STAGE_LIMIT_MS}, config: {{}}}}}}
"""


def freeze(host: StageHost, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Make ``host`` take messages and never settle them until the returned event is set."""
    thaw = asyncio.Event()
    decide = host.decide

    async def frozen(phase: Phase, msg: Msg) -> Settlement:
        await thaw.wait()
        return await decide(phase, msg)

    monkeypatch.setattr(host, "decide", frozen)
    return thaw


def test_the_stream_sequence_is_read_from_an_acknowledgement() -> None:
    assert stream_sequence(b'{"stream":"BW_PIPELINE","seq":12345}') == 12345
    assert stream_sequence(b'{"stream":"BW_PIPELINE","seq":7,"duplicate": true}') == 7
    assert stream_sequence(b'{"stream": "BW_PIPELINE", "seq": 8}') == 8
    assert stream_sequence(b'{"stream":"BW_PIPELINE"}') is None


async def test_a_frozen_optional_stage_is_routed_around_within_its_budget(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    events: list[StageEvent] = []

    async def on_event(msg: Msg) -> None:
        events.append(StageEvent.model_validate_json(msg.data))

    await nats_client.subscribe(stage_event_subject(FailureKind.TIMEOUT), cb=on_event)
    async with running_stages(loaded, nats_client) as hosts, serving(loaded, nats_server) as (http, _state):
        assert (await http.get("/optional")).headers.get("x-secure") == "yes", "healthy first"
        thaw = freeze(hosts["secure"][0], monkeypatch)
        started = time.monotonic()
        answered = await http.get("/optional")
        took = time.monotonic() - started
        assert answered.status_code == 200 and answered.text == "ok"
        assert answered.headers["x-backworks-skipped"] == "secure.response"
        assert "x-secure" not in answered.headers
        assert took < BOUND, f"waited {took:.2f} s for a stage limited to {STAGE_LIMIT_MS} ms"
        await asyncio.sleep(0.2)
        assert [(e.stage, e.skipped) for e in events] == [("secure.response", True)]
        assert "past its 200 ms time limit" in events[0].message

        # The frozen replica resumes: its late hand-off is dropped, nothing is answered twice, the stage serves again.
        thaw.set()
        await asyncio.sleep(0.5)
        again = await http.get("/optional")
        assert again.status_code == 200 and again.headers.get("x-secure") == "yes"


async def test_a_frozen_critical_stage_alone_fails_the_request_at_its_time_limit(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    async with running_stages(loaded, nats_client) as hosts, serving(loaded, nats_server) as (http, _state):
        assert (await http.get("/critical")).status_code == 200
        freeze(hosts["critical-handler"][0], monkeypatch)
        started = time.monotonic()
        answered = await http.get("/critical")
        took = time.monotonic() - started
        assert answered.status_code == 504
        problem = answered.json()
        assert problem["stage"] == "critical-handler.request" and problem["cause"] == "timeout"
        assert took < BOUND, f"waited {took:.2f} s for a stage limited to {STAGE_LIMIT_MS} ms"
        letters = await nats_client.jetstream().stream_info(DLQ_STREAM)
        assert letters.state.messages == 1, "the request failed: what it carried is a dead letter, replayable"


async def test_a_frozen_critical_replica_with_a_live_peer_is_left_to_redelivery(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    async with (
        running_stages(loaded, nats_client, replicas=2) as hosts,
        serving(loaded, nats_server) as (http, _state),
    ):
        freeze(hosts["critical-handler"][0], monkeypatch)
        answers = await asyncio.gather(*(http.get("/critical") for _ in range(6)))
        # JetStream redelivers what the frozen replica holds (to either replica): the stall watch must not 504 them.
        assert all(a.status_code != 504 for a in answers), [a.text for a in answers if a.status_code == 504]
        assert sum(host.forwarder.stalls.timed_out for host in hosts["stamp"]) == 0


@pytest.mark.usefixtures("allow_fault")
async def test_the_late_result_of_a_stage_routed_around_is_not_recorded_twice(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = blueprints.load(
        write_blueprint(
            tmp_path,
            f"""name: late
defaults: {{timeout_ms: {DEADLINE_MS}}}
plugins:
  opt: {{type: fault, timeout_ms: {STAGE_LIMIT_MS}, config: {{mode: raise, header: null}}}}
endpoints:
  e: {{path: /e, plugins: [opt], handler: {{type: mock, config: {{body: ok}}}}}}
""",
        )
    )
    events: list[StageEvent] = []

    async def on_event(msg: Msg) -> None:
        events.append(StageEvent.model_validate_json(msg.data))

    await nats_client.subscribe("bw.evt.stage.>", cb=on_event)
    async with running_stages(loaded, nats_client) as hosts, serving(loaded, nats_server) as (http, _state):
        thaw = freeze(hosts["opt"][0], monkeypatch)
        answered = await http.get("/e")
        assert answered.status_code == 200 and answered.headers["x-backworks-skipped"] == "opt.request"
        thaw.set()  # it resumes, its hook raises, its hand-off is a repeat JetStream drops
        await asyncio.sleep(1.0)
        assert [(e.stage, e.kind.value) for e in events] == [("opt.request", "timeout")]
