"""The envelopes that come back to a test on its reply subject (what the ``replies`` fixture collects)."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from backworks.contracts.envelope import Envelope

REPLY_SUBJECTS = "_INBOX.test.>"


class Replies:
    """Envelopes that reached ``_INBOX.test.>``, the reply subject tests give their envelopes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self.seen: list[Envelope] = []

    async def on_reply(self, msg: Msg) -> None:
        envelope = Envelope.from_json(msg.data)
        self.seen.append(envelope)
        await self.queue.put(envelope)

    async def next(self, timeout: float = 5.0) -> Envelope:
        return await asyncio.wait_for(self.queue.get(), timeout)
