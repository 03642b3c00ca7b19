from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import MSG_ID_HEADER, message_id, stage_subject
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.stagehost import ack_wait_for
from tests.conftest import Replies, eventually, write_blueprint
from tests.stages import running_stages


def new_envelope(loaded: LoadedBlueprint, reply_to: str, deadline_s: float = 5.0) -> Envelope:
    return Envelope(
        route="hello",
        method="GET",
        path="/hello/ann",
        path_params={"name": "ann"},
        deadline=time.time() + deadline_s,
        reply_to=reply_to,
        itinerary=loaded.itinerary("hello"),
    )


async def send(client: Client, envelope: Envelope) -> None:
    js = broker.jetstream(client)
    first = envelope.itinerary[0]
    await js.publish(
        stage_subject(first.instance, first.phase),
        envelope.to_json(),
        headers={MSG_ID_HEADER: message_id(envelope.id, 0)},
    )


async def test_an_envelope_passes_every_stage_and_returns_to_the_reply_subject(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    async with running_stages(example, nats_client):
        await send(nats_client, new_envelope(example, "_INBOX.test.1"))
        done = await replies.next()
    assert done.response is not None
    assert done.response.status == 200
    assert done.response.body == b'{"greeting": "Hello, ann!"}'
    assert done.response.header("x-content-type-options") == "nosniff"
    assert done.header("x-stamped") == "yes"
    assert [t.stage for t in done.timings] == ["stamp.request", "hello-handler.request", "secure.response"]
    assert done.cursor == len(done.itinerary)


async def test_replicas_share_the_durable_and_each_message_is_handled_once(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    async with running_stages(example, nats_client, replicas=2) as hosts:
        for index in range(40):
            await send(nats_client, new_envelope(example, f"_INBOX.test.{index}"))
        await eventually(lambda: len(replies.seen) == 40)
        await asyncio.sleep(0.2)  # room for a duplicate to show up
        per_replica = [host.processed for host in hosts["stamp"]]
    assert len(replies.seen) == 40
    assert len({r.id for r in replies.seen}) == 40
    assert sum(per_replica) == 40


async def test_a_repeated_hand_off_is_dropped_by_msg_id(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    envelope = new_envelope(example, "_INBOX.test.dup")
    async with running_stages(example, nats_client):
        await send(nats_client, envelope)
        await send(nats_client, envelope)
        await eventually(lambda: len(replies.seen) >= 1)
        await asyncio.sleep(0.3)
    assert len(replies.seen) == 1


async def test_expired_envelopes_are_dropped_not_processed(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    await send(nats_client, new_envelope(example, "_INBOX.test.old", deadline_s=-1))
    async with running_stages(example, nats_client) as hosts:
        await eventually(lambda: not hosts["stamp"][0].consumers[0].inflight)
        await asyncio.sleep(0.3)
        info = await broker.jetstream(nats_client).consumer_info("BW_PIPELINE", "bw-stamp-request")
    assert replies.seen == []
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_stage_started_after_the_request_still_serves_it(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    envelope = new_envelope(example, "_INBOX.test.late")
    envelope.cursor = 2  # waiting for secure.response, which has no consumer yet
    js = broker.jetstream(nats_client)
    await js.publish("bw.stage.secure.response", envelope.to_json())
    await asyncio.sleep(0.2)
    assert replies.queue.empty()
    async with running_stages(example, nats_client, only=["secure"]):
        done = await replies.next()
    assert done.timings[-1].stage == "secure.response"


async def test_forwarders_skip_an_optional_stage_with_no_live_replica(
    nats_client: Client, example: LoadedBlueprint, replies: Replies
) -> None:
    async with running_stages(example, nats_client, only=["stamp", "hello-handler"]) as hosts:
        await hosts["stamp"][0].liveness.ready.wait()
        await send(nats_client, new_envelope(example, "_INBOX.test.skip"))
        done = await replies.next()
        events = await broker.jetstream(nats_client).stream_info("BW_EVENTS")
    assert done.response is not None and done.response.status == 200
    assert [t.stage for t in done.timings] == ["stamp.request", "hello-handler.request"]
    (error,) = done.errors
    assert error.stage == "secure.response" and error.kind == "unavailable" and error.skipped
    assert events.state.messages == 1, "the skip is recorded on the event stream"


def test_ack_wait_is_short_and_long_hooks_are_covered_by_heartbeats() -> None:
    assert ack_wait_for(0.1) == 1.0  # a killed replica's message moves on within a second
    assert ack_wait_for(0.5) == 1.5
    assert ack_wait_for(60.0) == 2.0  # hooks longer than this send in-progress heartbeats


@pytest.mark.usefixtures("allow_fault")
async def test_a_hook_longer_than_the_ack_deadline_is_not_redelivered_while_it_works(
    tmp_path: Path, nats_client: Client, replies: Replies
) -> None:
    loaded = blueprints.load(
        write_blueprint(
            tmp_path,
            """name: long
plugins:
  slow: {type: fault, timeout_ms: 4000, config: {mode: delay, delay_ms: 3000, header: null}}
endpoints:
  e: {path: /x, plugins: [slow], handler: {type: mock, config: {body: ok}}}
""",
        )
    )
    envelope = Envelope(
        route="e", method="GET", path="/x", deadline=time.time() + 10,
        reply_to="_INBOX.test.long", itinerary=loaded.itinerary("e"),
    )  # fmt: skip
    async with running_stages(loaded, nats_client, replicas=2) as hosts:
        assert hosts["slow"][0].ack_wait == 2.0 < 3.0, "the hook outlasts the ack deadline"
        await send(nats_client, envelope)
        done = await replies.next(timeout=8)
        # A redelivery would have reached the other replica after 2 s and still be running (or done).
        inflight = sum(consumer.inflight for host in hosts["slow"] for consumer in host.consumers)
        await asyncio.sleep(2.5)
        processed = sum(host.processed for host in hosts["slow"])
    assert done.response is not None and done.response.status == 200
    assert [t.attempt for t in done.timings if t.stage == "slow.request"] == [1]
    assert inflight == 0 and processed == 1, "in-progress heartbeats kept the message from a second replica"
