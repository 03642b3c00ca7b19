from __future__ import annotations

import itertools
import time

import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from backworks.pipeline import broker
from backworks.pipeline.errors import PublishFailed
from backworks.pipeline.publisher import AckedPublisher
from backworks.pipeline.stagehost import delivery_count


async def test_acknowledged_publishes_are_stored_once_per_msg_id(nats_client: Client) -> None:
    publisher = AckedPublisher(nats_client)
    await publisher.start()
    for _ in range(3):
        await publisher.publish("bw.stage.x.request", b"{}", {"Nats-Msg-Id": "same"}, 1.0)
    await publisher.publish("bw.stage.x.request", b"{}", {"Nats-Msg-Id": "other"}, 1.0)
    info = await broker.jetstream(nats_client).stream_info("BW_PIPELINE")
    assert info.state.messages == 2
    await publisher.stop()


async def test_a_subject_no_stream_captures_is_an_error(nats_client: Client) -> None:
    publisher = AckedPublisher(nats_client)
    await publisher.start()
    with pytest.raises(PublishFailed, match="no stream captures"):
        await publisher.publish("nowhere.at.all", b"{}", {}, 1.0)
    assert len(publisher._waiting) == 0
    await publisher.stop()


async def test_a_rejected_publish_says_why(nats_client: Client) -> None:
    publisher = AckedPublisher(nats_client)
    await publisher.start()
    with pytest.raises(PublishFailed, match="wrong last"):
        await publisher.publish("bw.stage.x.request", b"{}", {"Nats-Expected-Last-Sequence": "999"}, 1.0)
    await publisher.stop()


async def test_no_acknowledgement_in_time_is_an_error(nats_client: Client) -> None:
    publisher = AckedPublisher(nats_client)
    await publisher.start()

    # Core subscribers do not acknowledge: the publish must time out, not hang.
    async def ignore(msg: object) -> None:
        return None

    await nats_client.subscribe("plain.subject", cb=ignore)
    with pytest.raises(PublishFailed, match="no acknowledgement within 200 ms"):
        await publisher.publish("plain.subject", b"{}", {}, 0.2)
    await publisher.stop()


def test_delivery_count_is_read_from_both_ack_subject_forms() -> None:
    assert delivery_count("$JS.ACK.BW_PIPELINE.bw-stamp-request.3.10.7.1732480000000000000.0") == 3
    assert delivery_count("$JS.ACK.hub.ACCHASH.BW_PIPELINE.bw-stamp-request.2.10.7.1732480000000000000.0.token") == 2
    assert delivery_count("nonsense") == 1


async def test_a_publish_no_stream_answers_is_retried_until_one_does(nats_client: Client) -> None:
    """What a hand-off rides out on a cluster while the stream elects a leader: here the stream appears late."""
    publisher = AckedPublisher(nats_client)
    await publisher.start()
    js = broker.jetstream(nats_client)
    tries: list[int] = []

    async def declare_on_second_retry() -> None:
        tries.append(len(tries))
        if len(tries) == 2:
            await js.add_stream(StreamConfig(name="LATE", subjects=["late.>"]))

    await publisher.publish("late.one", b"{}", {"Nats-Msg-Id": "a"}, 1.0, retry_for=5.0,
                            on_retry=declare_on_second_retry)  # fmt: skip
    assert tries == [0, 1]
    assert (await js.stream_info("LATE")).state.messages == 1
    assert len(publisher._waiting) == 0
    await publisher.stop()


async def test_retries_stop_after_retry_for_with_the_last_failure(nats_client: Client) -> None:
    publisher = AckedPublisher(nats_client)
    await publisher.start()
    tries: list[float] = []

    async def count() -> None:
        tries.append(time.monotonic())

    started = time.monotonic()
    with pytest.raises(PublishFailed, match="no stream captures"):
        await publisher.publish("nowhere.at.all", b"{}", {}, 1.0, retry_for=0.2, on_retry=count)
    # Pauses of 25, 50 and 100 ms fit in 0.2 s, the next (200 ms) would not; on a loaded machine the failed tries
    # themselves take time, so the third pause may not fit either.
    assert 2 <= len(tries) <= 3, tries
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert all(gap >= pause * 0.9 for gap, pause in zip(gaps, (0.05, 0.1), strict=False)), "the pauses grow"
    assert time.monotonic() - started < 2.0
    assert len(publisher._waiting) == 0
    await publisher.stop()


async def test_a_rejected_publish_is_not_retried(nats_client: Client) -> None:
    publisher = AckedPublisher(nats_client)
    await publisher.start()
    tries: list[int] = []

    async def count() -> None:
        tries.append(1)

    with pytest.raises(PublishFailed, match="wrong last"):
        await publisher.publish("bw.stage.x.request", b"{}", {"Nats-Expected-Last-Sequence": "999"}, 1.0,
                                retry_for=5.0, on_retry=count)  # fmt: skip
    assert tries == []
    await publisher.stop()
