"""The event publisher: never blocks the caller, confirms batches, counts every loss by reason."""

from __future__ import annotations

from nats.aio.client import Client

from backworks.contracts.events import StageCompleted
from backworks.contracts.names import EVENTS_STREAM, STAGE_COMPLETED_SUBJECT
from backworks.pipeline import broker
from backworks.pipeline.events import EventPublisher
from tests.events import stream_events
from tests.waiting import eventually


def completed(number: int) -> StageCompleted:
    return StageCompleted(request_id=f"r{number}", envelope_id="e", route="hello", stage="stamp.request", ms=1.0)


async def test_events_reach_the_stream_in_order_and_are_confirmed(nats_client: Client) -> None:
    publisher = EventPublisher(nats_client)
    await publisher.start()
    for number in range(600):  # more than one batch
        publisher.emit(STAGE_COMPLETED_SUBJECT, completed(number))
    await eventually(lambda: publisher.confirmed == 600)
    await publisher.stop()
    events = await stream_events(broker.jetstream(nats_client))
    assert [event["request_id"] for _, event in events] == [f"r{n}" for n in range(600)]
    assert publisher.report()["lost"] == 0


async def test_without_the_stream_every_event_is_counted_lost(nats_client: Client) -> None:
    await broker.jetstream(nats_client).delete_stream(EVENTS_STREAM)
    publisher = EventPublisher(nats_client)
    await publisher.start()
    for number in range(10):
        publisher.emit(STAGE_COMPLETED_SUBJECT, completed(number))
    await eventually(lambda: publisher.report()["lost"] == 10)
    await publisher.stop()
    assert publisher.report()["lost_refused"] == 10
    assert publisher.confirmed == 0


async def test_a_full_buffer_drops_and_counts_without_waiting(nats_client: Client) -> None:
    publisher = EventPublisher(nats_client, max_buffer=5)  # not started: nothing drains the buffer
    for number in range(8):
        publisher.emit(STAGE_COMPLETED_SUBJECT, completed(number))
    assert publisher.report()["lost_overflow"] == 3
    assert publisher.report()["pending"] == 5


async def test_the_event_stream_takes_the_blueprints_limits(nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    before = (await js.stream_info(EVENTS_STREAM)).config
    assert before.max_bytes in (None, -1), "no size limit unless the blueprint sets one"
    await broker.apply_event_limits(js, 3600.0, 8 * 1024 * 1024)
    after = (await js.stream_info(EVENTS_STREAM)).config
    assert (after.max_age, after.max_bytes, after.discard) == (3600.0, 8 * 1024 * 1024, "old")
    await broker.apply_event_limits(js, 3600.0, None)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_bytes == -1
