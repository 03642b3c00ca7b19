from __future__ import annotations

import pytest
from nats.aio.client import Client

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
