from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import MSG_ID_HEADER, message_id, stage_durable, stage_subject
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


async def _exhaust(nats_client: Client, example: LoadedBlueprint, position: int, went_on: bool) -> DeadLetterWatch:
    """An envelope at itinerary ``position`` taken by a replica that never acks (max_deliver 2) until the watch
    handles its advisory; with ``went_on``, the replica hands the envelope on first (it froze before its ack)."""
    js = broker.jetstream(nats_client)
    itinerary = example.itinerary("hello")
    stage = itinerary[position]
    durable = stage_durable(stage.instance, stage.phase)
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=2)
    frozen = await js.pull_subscribe(stage_subject(stage.instance, stage.phase), durable, config=config)
    events = EventPublisher(nats_client)
    await events.start()
    watch = DeadLetterWatch(nats_client, js, events)
    await watch.start()
    envelope = Envelope(
        route="hello", method="GET", path="/hello/x", request_id="req-answered",
        deadline=time.time() + DEADLINE, reply_to="_INBOX.test.answered", itinerary=itinerary, cursor=position,
    )  # fmt: skip
    await js.publish(stage_subject(stage.instance, stage.phase), envelope.to_json())
    (first,) = await frozen.fetch(1, timeout=2)
    if went_on:  # the hand-off a replica publishes before its ack, with the id the forwarder gives it
        nxt = itinerary[position + 1]
        await js.publish(
            stage_subject(nxt.instance, nxt.phase),
            Envelope.from_json(first.data).model_copy(update={"cursor": position + 1}).to_json(),
            headers={MSG_ID_HEADER: message_id(envelope.id, position + 1)},
        )
    await frozen.fetch(1, timeout=2)
    waiting = asyncio.ensure_future(frozen.fetch(1, timeout=2))  # a standing pull request: the server gives up
    await eventually(lambda: watch.handled == 1, timeout=5)
    waiting.cancel()
    await frozen.unsubscribe()
    return watch


async def test_a_request_that_went_on_is_not_dead_lettered_when_its_ack_never_came(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    js = broker.jetstream(nats_client)
    watch = await _exhaust(nats_client, example, 0, went_on=True)
    assert [letter async for _, letter in letters(js)] == [], "its request went on: no dead letter"
    assert replies.seen == [], "no failure sent to the gateway for a request that went on"
    pipeline = await js.stream_info("BW_PIPELINE")
    assert pipeline.state.messages == 1, "the exhausted copy removed, the hand-off it made left alone"
    await watch.stop()


async def test_a_dead_letter_fences_its_later_hand_offs(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    js = broker.jetstream(nats_client)
    watch = await _exhaust(nats_client, example, 0, went_on=False)
    (letter,) = [letter async for _, letter in letters(js)]
    assert not letter.answer_unknown
    assert (await replies.next()).errors[-1].kind == "exhausted"
    # The frozen replica resumes and hands the envelope on: JetStream drops it, the buried request stays failed.
    nxt = example.itinerary("hello")[1]
    late = await js.publish(
        stage_subject(nxt.instance, nxt.phase), letter.envelope.to_json(),
        headers={MSG_ID_HEADER: message_id(letter.envelope.id, 1)},
    )  # fmt: skip
    assert late.duplicate
    pipeline = await js.stream_info("BW_PIPELINE")
    assert pipeline.state.messages == 0, "fences are deleted"
    await watch.stop()


async def test_a_dead_letter_of_a_last_stage_says_its_answer_is_unknown(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    js = broker.jetstream(nats_client)
    watch = await _exhaust(nats_client, example, 2, went_on=False)
    (letter,) = [letter async for _, letter in letters(js)]
    assert letter.answer_unknown
    await watch.stop()


async def test_replay_refuses_a_letter_whose_answer_is_unknown_unless_forced(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    from backworks.contracts.events import DeadLetter
    from backworks.dlq_commands import _replay

    js = broker.jetstream(nats_client)
    envelope = Envelope(
        route="hello", method="GET", path="/hello/x", path_params={"name": "x"}, request_id="req-unknown",
        deadline=time.time() - 1, reply_to="_INBOX.test.unknown", itinerary=example.itinerary("hello"), cursor=2,
    )  # fmt: skip
    letter = DeadLetter(
        stage="secure.response", subject="bw.stage.secure.response", attempts=3, error="x", envelope=envelope,
        answer_unknown=True,
    )  # fmt: skip
    await js.publish("bw.dlq.secure.response", letter.model_dump_json().encode())
    server = nats_client.connected_url
    assert server is not None
    (refused,) = await _replay([server.geturl()], None, keep=False, timeout_ms=5000)
    assert "--force" in refused["refused"]
    assert len([item async for item in letters(js)]) == 1, "a refused letter stays"
    (forced,) = await _replay([server.geturl()], None, keep=False, timeout_ms=5000, force=True)
    assert "refused" not in forced
    assert [item async for item in letters(js)] == []
