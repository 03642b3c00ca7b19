"""A stage that holds an envelope past its time limit: routed around if optional, a 504 naming it if critical.

The replica is live (it heartbeats) but never settles what it receives, as a SIGSTOPped or starved replica
would: its ``decide`` is replaced by one that waits forever. The request deadline is far longer than the
stage's time limit, so a request that waited for the stage would take the whole deadline.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.events import StageEvent
from backworks.contracts.names import (
    DLQ_STREAM,
    PIPELINE_STREAM,
    Phase,
    stage_durable,
    stage_event_subject,
    stage_subject,
)
from backworks.contracts.registry import ReplicaInfo
from backworks.contracts.types import FailureKind
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.liveness import LIVENESS_TTL, LivenessView, Seen
from backworks.pipeline.publisher import stream_sequence
from backworks.pipeline.settlement import Settlement
from backworks.pipeline.stagehost import StageHost
from backworks.pipeline.stalls import STALL_MARGIN, Held, StallWatch, Verdict, may_be_claimed, stored_at
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


async def stopped() -> None:
    """A pull consumer's top-up in a stopped process: nothing."""


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


async def test_what_a_frozen_critical_replica_holds_is_given_to_its_live_peer(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    async with (
        running_stages(loaded, nats_client, replicas=2) as hosts,
        serving(loaded, nats_server) as (http, _state),
    ):
        frozen, live = hosts["critical-handler"]
        thaw = freeze(frozen, monkeypatch)
        for consumer in frozen.consumers:  # stopped, as by SIGSTOP: it asks for no more work
            monkeypatch.setattr(consumer, "_top_up", stopped)
        started = time.monotonic()
        answers = await asyncio.gather(*(http.get("/critical") for _ in range(6)))
        took = time.monotonic() - started
        # What the frozen replica holds is claimed back at the stage's time limit and handed to the stage again,
        # where the live replica takes it: every request succeeds, long before its deadline.
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers if a.status_code != 200]
        assert took < BOUND * 2, f"waited {took:.2f} s for a stage limited to {STAGE_LIMIT_MS} ms"
        stalls = [host.forwarder.stalls for host in hosts["stamp"]]
        assert sum(s.timed_out for s in stalls) == 0
        assert sum(s.retaken for s in stalls) >= 1, "the frozen replica held some of them"
        assert live.processed == 6, "the live replica ran every request once"
        # It resumes: what it held was claimed back, so it drops it without running the handler again.
        thaw.set()
        await asyncio.sleep(0.5)
        assert frozen.processed == 0
        assert frozen.dropped["claimed"] >= 1


def test_another_replica_may_serve_only_if_it_was_there_at_the_hand_off() -> None:
    view = LivenessView(cast(JetStreamContext, None))
    info = {"plugin": "p", "version": "1", "phases": ["request"], "pid": 1, "host": "h", "started_at": 0, "sent_at": 0}

    def seen(replica: str, first: float, last: float) -> Seen:
        return Seen(ReplicaInfo.model_validate({"instance": "s", "replica": replica, **info}), last, first)

    handed_at = 100.0
    later = handed_at + LIVENESS_TTL + 0.1  # the holder, frozen at the hand-off, has gone silent
    view.replicas["s"] = {"a": seen("a", 0, handed_at), "b": seen("b", 0, later)}
    assert view.others_could_serve("s", handed_at, now=later), "b was live then and is now"
    view.replicas["s"] = {"a": seen("a", 0, handed_at), "c": seen("c", handed_at + 1, later)}
    assert not view.others_could_serve("s", handed_at, now=later), "c replaced a crashed a: not handed it again"
    view.replicas["s"] = {"a": seen("a", 0, handed_at + 0.5)}
    assert not view.others_could_serve("s", handed_at, now=handed_at + 1), "the only replica holds it"
    view.replicas["s"] = {"a": seen("a", 0, handed_at + 0.5), "b": seen("b", 0, handed_at + 0.5)}
    assert view.others_could_serve("s", handed_at, now=handed_at + 1), "two live replicas"


def test_the_time_a_message_was_stored_is_read_from_its_ack_subject() -> None:
    ns = 1_700_000_000_123_456_789
    assert stored_at(f"$JS.ACK.BW_PIPELINE.d.1.42.40.{ns}.0") == ns / 1e9
    assert stored_at(f"$JS.ACK.dom.hash.BW_PIPELINE.d.1.42.40.{ns}.0.tok") == ns / 1e9
    assert stored_at("not.an.ack") is None
    assert may_be_claimed(f"$JS.ACK.BW_PIPELINE.d.1.42.40.{ns}.0", 0.5, now=ns / 1e9 + 0.5 + STALL_MARGIN + 0.01)
    assert not may_be_claimed(f"$JS.ACK.BW_PIPELINE.d.1.42.40.{ns}.0", 0.5, now=ns / 1e9 + 0.5)


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


class NobodyElse:
    """A stage with one replica: a stall fails the request (``Verdict.FAIL``) unless the replica is stranded on a
    server that does not answer (set ``stranded_now``)."""

    def __init__(self) -> None:
        self.stranded_now = False

    def others_could_serve(self, instance: str, handed_at: float) -> bool:
        return False

    def stranded(self, instance: str) -> bool:
        return self.stranded_now


def waited_for() -> bytes:
    """An envelope whose request is still waited for (its deadline ahead)."""
    return Envelope(route="r", method="GET", path="/r", deadline=time.time() + DEADLINE_MS / 1000).to_json()


async def held_by_a_replica(js: JetStreamContext, stage: Stage) -> int:
    """A hand-off to ``stage`` that a replica pulled and has not acknowledged yet; its stream sequence."""
    from nats.js.api import AckPolicy, ConsumerConfig

    durable = stage_durable(stage.instance, stage.phase)
    await js.add_consumer(PIPELINE_STREAM, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT))
    ack = await js.publish(stage_subject(stage.instance, stage.phase), b"{}")
    pulled = await js.pull_subscribe_bind(durable, PIPELINE_STREAM)
    [message] = await pulled.fetch(1, timeout=5)
    assert message.metadata.sequence.stream == ack.seq
    return ack.seq


class Verdicts(list[Verdict]):
    """What a stall watch decided, in order (its ``on_stalled``)."""

    async def __call__(self, held: Held, verdict: Verdict) -> None:
        self.append(verdict)


class Disruptions:
    """A count of broker disruptions the test raises by hand (the forwarder's reconnects and retried publishes)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


async def lonely_hand_off(
    nats_client: Client, data: bytes, disruptions: Disruptions | None = None, liveness: NobodyElse | None = None
) -> tuple[StallWatch, Verdicts, Stage]:
    """The streams declared, one hand-off to a critical stage ``lonely`` that a replica holds unacknowledged, and a
    stall watch watching it (its verdicts recorded)."""
    js = nats_client.jetstream()
    await broker.declare(js)
    stage = Stage(instance="lonely", phase=Phase.REQUEST, critical=True, timeout_ms=STAGE_LIMIT_MS)
    sequence = await held_by_a_replica(js, stage)
    stalled = Verdicts()
    watch = StallWatch(js, stalled, liveness or NobodyElse(), disruptions)
    watch.watch(stage, sequence, data)
    return watch, stalled, stage


async def test_a_hold_by_a_replica_stranded_on_a_silent_server_is_watched_again_not_failed(
    nats_server: EmbeddedNats, nats_client: Client
) -> None:
    liveness = NobodyElse()
    liveness.stranded_now = True
    watch, stalled, _ = await lonely_hand_off(nats_client, waited_for(), liveness=liveness)
    handed = time.monotonic()
    hold = STAGE_LIMIT_MS / 1000 + STALL_MARGIN
    await watch.sweep(now=handed + hold + 0.01)
    assert stalled == [] and len(watch) == 1 and watch.extended == 1, "its replica is failing over: waited for"
    await watch.sweep(now=handed + hold + 0.01 + hold / 2)
    assert stalled == [] and watch.extended == 1, "its hold restarted when it was found stranded: not due yet"
    liveness.stranded_now = False  # still holding it, its server answering again (or its grace over)
    await watch.sweep(now=handed + 2 * hold + 0.02)
    assert stalled == [Verdict.FAIL]


async def test_a_hold_the_broker_disrupted_gets_the_stage_its_whole_time_limit_again(
    nats_server: EmbeddedNats, nats_client: Client
) -> None:
    disruptions = Disruptions()
    watch, stalled, _ = await lonely_hand_off(nats_client, waited_for(), disruptions)
    handed = time.monotonic()
    hold = STAGE_LIMIT_MS / 1000 + STALL_MARGIN

    # The broker paused (a reconnect, a retried publish) while the stage held the hand-off: the stage could not
    # hand on meanwhile, so at its due time it is given its whole limit again, from the disruption.
    disruptions.count += 1
    await watch.sweep(now=handed + hold + 0.01)
    assert stalled == [] and watch.extended == 1 and len(watch) == 1

    # Undisturbed since, it holds past its limit counted from the disruption: a stall, as before.
    await watch.sweep(now=handed + hold + 0.01 + hold / 2)
    assert stalled == [], "not due yet: its time restarted at the disruption"
    await watch.sweep(now=handed + 2 * hold + 0.02)
    assert stalled == [Verdict.FAIL]
    assert watch.extended == 1, "one disruption gives one more hold, not an endless one"


async def test_a_sweep_the_broker_does_not_answer_keeps_watching_instead_of_failing(
    nats_server: EmbeddedNats, nats_client: Client
) -> None:
    watch, stalled, _ = await lonely_hand_off(nats_client, waited_for())
    handed = time.monotonic()
    hold = STAGE_LIMIT_MS / 1000 + STALL_MARGIN
    nats_server.stop()  # no stream answers the sweep's consumer-info request
    try:
        await watch.sweep(now=handed + hold + 0.01)
    finally:
        nats_server.start()
    assert stalled == [] and len(watch) == 1, "still watched, its hold started again"
    assert watch.disrupted_at == handed + hold + 0.01


async def test_a_disrupted_hold_whose_request_is_no_longer_waited_for_is_dropped(
    nats_server: EmbeddedNats, nats_client: Client
) -> None:
    disruptions = Disruptions()
    expired = Envelope(route="r", method="GET", path="/r", deadline=time.time() - 1).to_json()
    watch, stalled, _ = await lonely_hand_off(nats_client, expired, disruptions)
    disruptions.count += 1
    await watch.sweep(now=time.monotonic() + 1)
    assert stalled == [] and len(watch) == 0, "nobody waits for it: not watched again"
