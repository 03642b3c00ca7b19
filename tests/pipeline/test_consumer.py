"""The standing pull consumer under every stage: each message once, bounded in flight, survives its handler."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo
from nats.js.errors import NotFoundError
from structlog.testing import capture_logs

from backworks.contracts.names import PIPELINE_STREAM
from backworks.pipeline import broker
from backworks.pipeline.consumer import PullConsumer
from tests.waiting import eventually

SUBJECT = "bw.stage.c.request"


def config(durable: str) -> ConsumerConfig:
    return ConsumerConfig(
        name=durable, durable_name=durable, filter_subject=SUBJECT, ack_policy=AckPolicy.EXPLICIT, ack_wait=10
    )


async def publish(client: Client, count: int, first: int = 0) -> None:
    js = broker.jetstream(client)
    for index in range(first, first + count):
        await js.publish(SUBJECT, str(index).encode())


async def test_every_message_reaches_the_handler_once_without_waiting_for_a_batch(nats_client: Client) -> None:
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg.data)
        await msg.ack()

    consumer = PullConsumer(nats_client, broker.jetstream(nats_client), PIPELINE_STREAM, config("c1"), handler, 8)
    await consumer.start()
    try:
        await publish(nats_client, 1)
        await eventually(lambda: len(seen) == 1, timeout=1.0)  # one message, far fewer than the batch of 8
        await publish(nats_client, 29, first=1)
        await eventually(lambda: len(seen) == 30)
        await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    assert sorted(int(data) for data in seen) == list(range(30))


async def test_no_more_than_max_inflight_messages_are_handled_at_once(nats_client: Client) -> None:
    running = 0
    peak = 0
    done = 0

    async def handler(msg: Msg) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done += 1
        await msg.ack()

    consumer = PullConsumer(nats_client, broker.jetstream(nats_client), PIPELINE_STREAM, config("c2"), handler, 4)
    await consumer.start()
    try:
        await publish(nats_client, 20)
        await eventually(lambda: done == 20)
    finally:
        await consumer.stop()
    assert peak == 4


async def test_a_crashing_handler_is_logged_and_the_consumer_goes_on(nats_client: Client) -> None:
    handled: list[bytes] = []

    async def handler(msg: Msg) -> None:
        if msg.data == b"0":
            raise RuntimeError("bug in the host")
        handled.append(msg.data)
        await msg.ack()

    consumer = PullConsumer(nats_client, broker.jetstream(nats_client), PIPELINE_STREAM, config("c3"), handler, 2)
    with capture_logs() as logs:
        await consumer.start()
        try:
            await publish(nats_client, 3)
            await eventually(lambda: len(handled) == 2)
        finally:
            await consumer.stop()
    assert sorted(handled) == [b"1", b"2"]
    (crash,) = [entry for entry in logs if entry["event"] == "message handler crashed"]
    assert crash["consumer"] == "c3" and crash["log_level"] == "error"


async def test_stop_lets_in_flight_messages_finish(nats_client: Client) -> None:
    finished: list[bytes] = []
    started = asyncio.Event()

    async def handler(msg: Msg) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(msg.data)
        await msg.ack()

    consumer = PullConsumer(nats_client, broker.jetstream(nats_client), PIPELINE_STREAM, config("c4"), handler, 2)
    await consumer.start()
    await publish(nats_client, 1)
    await asyncio.wait_for(started.wait(), 2.0)
    await consumer.stop()
    assert finished == [b"0"] and consumer.inflight == 0, "stop returned only after the handler finished"
    js = broker.jetstream(nats_client)

    async def acked() -> bool:  # the server applies an ack asynchronously (it is a core publish)
        info: ConsumerInfo = await js.consumer_info(PIPELINE_STREAM, "c4")  # nats-py leaves it unannotated
        return info.num_ack_pending == 0

    await eventually(acked, timeout=3)


async def test_a_deleted_durable_is_recreated_and_serves_again(nats_client: Client) -> None:
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg.data)
        await msg.ack()

    js = broker.jetstream(nats_client)
    consumer = PullConsumer(nats_client, js, PIPELINE_STREAM, config("c5"), handler, 2)
    await consumer.start()
    try:
        await js.delete_consumer(PIPELINE_STREAM, "c5")

        async def recreated() -> bool:
            try:
                await js.consumer_info(PIPELINE_STREAM, "c5")
            except NotFoundError:
                return False
            return True

        await eventually(recreated, timeout=8)
        await publish(nats_client, 1)
        await eventually(lambda: seen == [b"0"], timeout=8)
    finally:
        await consumer.stop()
