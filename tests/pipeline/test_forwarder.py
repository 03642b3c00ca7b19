"""The one hand-off: next available stage with a de-duplicating msg id, or the reply subject."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.names import EVENTS_STREAM, MSG_ID_HEADER, PIPELINE_STREAM, Phase
from backworks.contracts.types import FailureKind
from backworks.pipeline import broker
from backworks.pipeline.forwarder import Forwarder
from tests.replies import Replies


def envelope(*stages: Stage, reply_to: str = "_INBOX.test.fwd") -> Envelope:
    return Envelope(
        route="r", method="GET", path="/", deadline=time.time() + 5, reply_to=reply_to, itinerary=list(stages)
    )


async def test_hands_off_to_the_current_stage_once_per_msg_id(nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    forwarder = Forwarder(nats_client, js, {}, "t", gated=False)
    await forwarder.start()
    try:
        env = envelope(Stage(instance="a", phase=Phase.REQUEST), Stage(instance="b", phase=Phase.RESPONSE))
        env.cursor = 1
        sent = await forwarder.forward(env)
        again = await forwarder.forward(env)  # a redelivered stage hands off again: JetStream drops it
    finally:
        await forwarder.stop()
    assert sent == again == env.itinerary[1]
    info = await js.stream_info(PIPELINE_STREAM)
    assert info.state.messages == 1
    stored = await js.get_last_msg(PIPELINE_STREAM, "bw.stage.b.response")
    assert stored.headers is not None and stored.headers[MSG_ID_HEADER] == f"{env.id}:1"
    assert Envelope.from_json(stored.data or b"").cursor == 1


async def test_after_the_last_stage_the_envelope_goes_to_its_reply_subject(
    nats_client: Client, replies: Replies
) -> None:
    forwarder = Forwarder(nats_client, broker.jetstream(nats_client), {}, "t", gated=False)
    await forwarder.start()
    env = envelope(Stage(instance="a", phase=Phase.REQUEST))
    env.cursor = 1
    try:
        assert await forwarder.forward(env) is None
        done = await replies.next(timeout=2)
    finally:
        await forwarder.stop()
    assert done.id == env.id
    assert (await broker.jetstream(nats_client).stream_info(PIPELINE_STREAM)).state.messages == 0


async def test_a_gated_forwarder_skips_optional_stages_nobody_serves_and_ends_at_a_critical_one(
    nats_client: Client, replies: Replies
) -> None:
    js = broker.jetstream(nats_client)
    settings = {name: BreakerSettings() for name in ("opt", "crit", "after")}
    forwarder = Forwarder(nats_client, js, settings, "t")
    await forwarder.start()
    try:
        await forwarder.ready(5.0)
        assert forwarder.liveness.ready.is_set(), "the registry was read: nobody is live"
        env = envelope(
            Stage(instance="opt", phase=Phase.REQUEST),
            Stage(instance="crit", phase=Phase.REQUEST, critical=True),
            Stage(instance="after", phase=Phase.RESPONSE),
        )
        assert forwarder.blocked_critical(env.itinerary) == (env.itinerary[1], "no live replica")
        assert await forwarder.forward(env) is None
        done = await replies.next(timeout=2)
        await asyncio.sleep(0.1)
        events = await js.stream_info(EVENTS_STREAM)
    finally:
        await forwarder.stop()
    assert [(e.stage, e.kind, e.skipped) for e in done.errors] == [
        ("opt.request", FailureKind.UNAVAILABLE, True),
        ("crit.request", FailureKind.UNAVAILABLE, False),
    ]
    assert done.cursor == len(done.itinerary), "the critical stage ended the itinerary: nothing ran after it"
    assert events.state.messages == 2, "each skip is on the event stream"
    assert (await js.stream_info(PIPELINE_STREAM)).state.messages == 0
