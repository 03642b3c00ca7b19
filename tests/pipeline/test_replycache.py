"""Recent replies: kept a few seconds, sent again to the gateway that asks (and to no other), bounded."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from backworks.contracts.names import REPLY_RESEND_SUBJECT, gateway_inbox, reply_subject
from backworks.pipeline import replycache
from backworks.pipeline.replycache import RecentReplies
from tests.waiting import eventually


async def inbox_of(client: Client, gateway: str) -> list[Msg]:
    seen: list[Msg] = []

    async def collect(msg: Msg) -> None:
        seen.append(msg)

    await client.subscribe(gateway_inbox(gateway), cb=collect)
    await client.flush()
    return seen


async def test_a_gateway_that_asks_gets_its_own_recent_replies_again_and_only_those(nats_client: Client) -> None:
    replies = RecentReplies(nats_client)
    await replies.start()
    try:
        for gateway, correlation in (("g1", "a"), ("g2", "b"), ("g1", "c")):
            subject = reply_subject(gateway, correlation)
            await nats_client.publish(subject, correlation.encode())  # nobody listens: dropped, as during a reconnect
            replies.keep(subject, correlation.encode())
        seen = await inbox_of(nats_client, "g1")
        await nats_client.publish(REPLY_RESEND_SUBJECT, b"g1")
        await eventually(lambda: len(seen) == 2)
        await asyncio.sleep(0.3)
        assert [(m.subject, m.data) for m in seen] == [
            (reply_subject("g1", "a"), b"a"),
            (reply_subject("g1", "c"), b"c"),
        ]
        assert replies.resent == 2

        await nats_client.publish(REPLY_RESEND_SUBJECT, b"g1.>")  # not a gateway id: ignored
        await nats_client.publish(REPLY_RESEND_SUBJECT, b"*")
        await asyncio.sleep(0.3)
        assert len(seen) == 2 and replies.resent == 2
    finally:
        await replies.stop()


async def test_replies_older_than_the_window_or_beyond_the_bounds_are_forgotten(
    nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = RecentReplies(nats_client, keep_s=0.2)
    replies.keep(reply_subject("g", "old"), b"x")
    await asyncio.sleep(0.4)
    assert await replies.resend("g") == 0, "older than keep_s"

    monkeypatch.setattr(replycache, "MAX_KEPT_BYTES", 250)
    replies = RecentReplies(nats_client)
    for index in range(5):
        replies.keep(reply_subject("g", str(index)), b"b" * 100)
    assert [kept.subject for kept in replies.kept] == [reply_subject("g", "3"), reply_subject("g", "4")]
    assert replies.bytes == 200

    monkeypatch.setattr(replycache, "MAX_KEPT", 3)
    replies = RecentReplies(nats_client)
    for index in range(5):
        replies.keep(reply_subject("g", str(index)), b"")
    assert len(replies.kept) == 3
