from __future__ import annotations

import asyncio

from nats.aio.client import Client

from backworks.gateway.replies import ReplyInbox


async def test_late_and_duplicate_replies_are_dropped(nats_client: Client) -> None:
    inbox = ReplyInbox(nats_client, "gw1")
    await inbox.start()
    future = inbox.expect("c1", 5.0)
    await nats_client.publish(inbox.subject("c1"), b"first")
    await nats_client.publish(inbox.subject("c1"), b"duplicate")
    await nats_client.publish(inbox.subject("unknown"), b"late")
    assert await asyncio.wait_for(future, 2) == b"first"
    await nats_client.flush()
    await asyncio.sleep(0.1)
    assert inbox.dropped == 2
    assert len(inbox.waiting) == 0
    await inbox.stop()


async def test_replies_for_another_gateway_are_not_received(nats_client: Client) -> None:
    mine, other = ReplyInbox(nats_client, "gw-a"), ReplyInbox(nats_client, "gw-b")
    await mine.start()
    future = mine.expect("c1", 5.0)
    await nats_client.publish(other.subject("c1"), b"not for me")
    await nats_client.flush()
    await asyncio.sleep(0.1)
    assert not future.done()
    await mine.stop()
