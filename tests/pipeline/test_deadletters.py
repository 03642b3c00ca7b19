from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import stage_durable, stage_subject
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.deadletters import DeadLetterWatch, letters
from backworks.pipeline.events import EventPublisher
from tests.replies import Replies
from tests.stages import running_stages
from tests.waiting import eventually

DEADLINE = 10.0


async def test_exhausted_deliveries_are_dead_lettered_and_the_gateway_answered_at_once(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    js = broker.jetstream(nats_client)
    # A replica that takes the message and dies every time: fetch, never ack.
    durable = stage_durable("stamp", example.itinerary("hello")[0].phase)
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=2)
    poisoned = await js.pull_subscribe(
        stage_subject("stamp", example.itinerary("hello")[0].phase), durable, config=config
    )
    events = EventPublisher(nats_client)
    await events.start()
    watch = DeadLetterWatch(nats_client, js, events)
    await watch.start()
    envelope = Envelope(
        route="hello", method="GET", path="/hello/x", request_id="req-dlq",
        deadline=time.time() + DEADLINE, reply_to="_INBOX.test.dlq", itinerary=example.itinerary("hello"),
    )  # fmt: skip
    await js.publish(stage_subject("stamp", envelope.itinerary[0].phase), envelope.to_json())
    for _ in range(2):
        await poisoned.fetch(1, timeout=2)
    # A standing pull request, as live replicas always have: the server then finds deliveries exhausted.
    waiting = asyncio.ensure_future(poisoned.fetch(1, timeout=2))
    started = time.monotonic()
    answered = await replies.next()
    waiting.cancel()
    assert time.monotonic() - started < DEADLINE / 3, "answered when deliveries ran out, not at the deadline"
    (error,) = answered.errors
    assert error.kind == "exhausted" and error.stage == "stamp.request" and not error.skipped
    found = [letter async for _, letter in letters(js)]
    assert len(found) == 1
    assert found[0].attempts == 2 and found[0].envelope.request_id == "req-dlq"
    assert found[0].subject == "bw.stage.stamp.request"
    pipeline = await js.stream_info("BW_PIPELINE")
    assert pipeline.state.messages == 0, "moved, not copied"
    await watch.stop()
    await events.stop()
    await poisoned.unsubscribe()


async def test_replay_sends_a_dead_letter_back_to_its_stage(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    from backworks.contracts.events import DeadLetter
    from backworks.dlq_commands import _replay

    js = broker.jetstream(nats_client)
    envelope = Envelope(
        route="hello", method="GET", path="/hello/x", path_params={"name": "x"}, request_id="req-replay",
        deadline=time.time() - 1, reply_to="_INBOX.test.replayed", itinerary=example.itinerary("hello"),
    )  # fmt: skip
    letter = DeadLetter(
        stage="stamp.request", subject="bw.stage.stamp.request", attempts=3, error="x", envelope=envelope
    )
    await js.publish("bw.dlq.stamp.request", letter.model_dump_json().encode())
    server = nats_client.connected_url
    assert server is not None
    async with running_stages(example, nats_client):
        done = await _replay([server.geturl()], None, keep=False, timeout_ms=5000)
        assert len(done) == 1
        replayed = await replies.next()
    assert replayed.request_id == "req-replay"
    assert replayed.response is not None and replayed.response.status == 200
    await eventually(lambda: True)
    assert [item async for item in letters(js)] == []
