"""A reply published while the gateway's connection was down is asked for again once it has reconnected."""

from __future__ import annotations

import time

from nats.aio.client import Client

from backworks.gateway.replies import ReplyInbox
from backworks.pipeline.replycache import RecentReplies
from backworks.sdk import factories


async def test_a_reply_dropped_before_the_inbox_listened_arrives_after_the_gateway_asks_again(
    nats_client: Client,
) -> None:
    stage = RecentReplies(nats_client)
    await stage.start()
    inbox = ReplyInbox(nats_client, "g7")
    try:
        envelope = factories.request("GET", "/x")
        envelope.correlation_id = "c1"
        envelope.reply_to = inbox.subject("c1")
        envelope.deadline = time.time() + 30
        data = envelope.to_json()
        await nats_client.publish(envelope.reply_to, data)  # the gateway is away: nobody subscribes, it is dropped
        stage.keep(envelope.reply_to, data)

        await inbox.start()  # back: subscribed again
        waiting = inbox.expect("c1", 10.0)
        await inbox.reconnected()
        got = await waiting
        assert got.correlation_id == "c1" and got.request_id == envelope.request_id
        assert stage.resent >= 1
    finally:
        await inbox.stop()
        await stage.stop()
