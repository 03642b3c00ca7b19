"""Ack / nak-with-delay / term: decided once per message by the stage host, applied by ``settle``."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import PIPELINE_STREAM
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.errors import PublishFailed
from backworks.pipeline.settlement import ACK, Ack, Nak, Settlement, Term, settle
from backworks.pipeline.stagehost import NAK_DELAY, StageHost
from tests.waiting import eventually

SUBJECT = "bw.stage.probe.request"


async def pull(client: Client, durable: str, timeout: float = 2.0) -> Msg:
    js = broker.jetstream(client)
    sub = await js.pull_subscribe(SUBJECT, durable, stream=PIPELINE_STREAM)
    (msg,) = await sub.fetch(1, timeout=timeout)
    return msg


async def consumer(client: Client, durable: str) -> None:
    config = ConsumerConfig(
        durable_name=durable, filter_subject=SUBJECT, ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=5
    )
    await broker.jetstream(client).add_consumer(PIPELINE_STREAM, config)


@pytest.mark.parametrize("settlement", [ACK, Term("unreadable")])
async def test_ack_and_term_end_the_message(nats_client: Client, settlement: Settlement) -> None:
    await consumer(nats_client, "d-end")
    await broker.jetstream(nats_client).publish(SUBJECT, b"x")
    await settle(await pull(nats_client, "d-end"), settlement)
    js = broker.jetstream(nats_client)

    async def settled() -> bool:  # the server applies an ack asynchronously (it is a core publish)
        info: ConsumerInfo = await js.consumer_info(PIPELINE_STREAM, "d-end")  # nats-py leaves it unannotated
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled, timeout=3)
    await asyncio.sleep(0.3)
    info = await js.consumer_info(PIPELINE_STREAM, "d-end")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0, "ended, not redelivered"


async def test_nak_redelivers_after_its_delay(nats_client: Client) -> None:
    await consumer(nats_client, "d-nak")
    await broker.jetstream(nats_client).publish(SUBJECT, b"x")
    first = await pull(nats_client, "d-nak")
    naked_at = time.monotonic()
    await settle(first, Nak(0.4))
    second = await pull(nats_client, "d-nak", timeout=3.0)
    waited = time.monotonic() - naked_at
    assert second.metadata.num_delivered == 2
    assert waited >= 0.35, f"redelivered after {waited:.2f} s, before the nak's delay"
    await settle(second, ACK)


async def test_the_stage_host_decides_once_per_message(
    nats_client: Client, example: LoadedBlueprint, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = StageHost(example.instances["stamp"], nats_client)
    stage = example.itinerary("hello")[0]
    phase = stage.phase

    def message(data: bytes, delivered: int = 1) -> Msg:
        reply = f"$JS.ACK.BW_PIPELINE.bw-stamp-request.{delivered}.1.1.{time.time_ns()}.0"  # stored just now
        return Msg(nats_client, subject="bw.stage.stamp.request", reply=reply, data=data)

    good = Envelope(
        route="hello", method="GET", path="/hello/a", deadline=time.time() + 5, itinerary=example.itinerary("hello")
    )
    misrouted = good.model_copy(update={"cursor": 1})
    expired = good.model_copy(update={"deadline": time.time() - 1})

    async def forwarded(envelope: Envelope, **options: object) -> None:
        return None

    async def refused(envelope: Envelope, **options: object) -> None:
        raise PublishFailed("bw.stage.hello-handler.request", "no acknowledgement within 1000 ms")

    monkeypatch.setattr(host.forwarder, "forward", forwarded)
    assert await host.decide(phase, message(b"{not json")) == Term("unreadable envelope")
    assert await host.decide(phase, message(misrouted.to_json())) == Term("misrouted envelope")
    assert await host.decide(phase, message(expired.to_json())) == Ack(), "first delivery past its deadline: dropped"
    assert await host.decide(phase, message(good.to_json())) == ACK
    assert await host.decide(phase, message(good.to_json(), delivered=2)) == ACK, "handed on already: not run again"
    monkeypatch.setattr(host.forwarder, "forward", refused)
    other = good.model_copy(update={"id": "another-envelope"})
    assert await host.decide(phase, message(other.to_json())) == Nak(NAK_DELAY)
    assert await host.decide(phase, message(other.to_json(), delivered=3)) == Nak(NAK_DELAY * 4), "backs off"
    assert host.processed == 2, "the hook ran once for `other`: its redeliveries only try the hand-off again"
    sent: list[Envelope] = []
    release = asyncio.Event()

    async def slow(envelope: Envelope, **options: object) -> None:
        sent.append(envelope)
        await release.wait()

    monkeypatch.setattr(host.forwarder, "forward", slow)
    first = asyncio.create_task(host.decide(phase, message(other.to_json(), delivered=4)))
    await eventually(lambda: bool(sent), timeout=3)
    copy = await host.decide(phase, message(other.to_json(), delivered=5))
    assert copy == Nak(host.ack_wait), "a copy redelivered while the first is at work is put back, not run"
    release.set()
    assert await first == ACK
    assert sent[0].cursor == 1, "the kept result was handed on: the stage's work, not the envelope as received"
    assert host.processed == 2


async def test_settle_applies_each_settlement_with_its_own_method() -> None:
    calls: list[tuple[str, object]] = []

    class Recorder:
        async def ack(self) -> None:
            calls.append(("ack", None))

        async def nak(self, delay: float | None = None) -> None:
            calls.append(("nak", delay))

        async def term(self) -> None:
            calls.append(("term", None))

    for settlement in (ACK, Nak(0.5), Term("misrouted")):
        await settle(Recorder(), settlement)  # type: ignore[arg-type]  # only the three settling methods
    assert calls == [("ack", None), ("nak", 0.5), ("term", None)]
