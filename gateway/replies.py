"""The gateway's reply inbox: one core-NATS subscription, a future per waiting request.

Late replies (the request already timed out) and duplicates (a redelivered last stage) find no
waiting future and are dropped.
"""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from backworks.contracts.names import gateway_inbox, reply_subject
from backworks.pipeline.awaiting import AwaitableMap

log = structlog.get_logger("backworks.gateway")


class ReplyInbox:
    """Routes replies on ``_INBOX.bw.<gateway>.<correlation>`` to the request awaiting them."""

    def __init__(self, client: Client, gateway_id: str) -> None:
        self.client = client
        self.gateway_id = gateway_id
        self.waiting: AwaitableMap[str, bytes] = AwaitableMap()
        self.dropped = 0
        self._sub: Subscription | None = None
        self._prefix_len = len(reply_subject(gateway_id, ""))

    async def start(self) -> None:
        self._sub = await self.client.subscribe(
            gateway_inbox(self.gateway_id), cb=self._on_reply, pending_msgs_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        self.waiting.cancel_all()

    def subject(self, correlation_id: str) -> str:
        return reply_subject(self.gateway_id, correlation_id)

    def expect(self, correlation_id: str, timeout: float) -> asyncio.Future[bytes]:
        """The future of ``correlation_id``'s reply; ``TimeoutError`` when none arrives within ``timeout`` s."""
        return self.waiting.expect(correlation_id, timeout)

    def forget(self, correlation_id: str) -> None:
        self.waiting.forget(correlation_id)

    async def _on_reply(self, msg: Msg) -> None:
        correlation_id = msg.subject[self._prefix_len :]
        if not self.waiting.resolve(correlation_id, msg.data):
            self.dropped += 1
            log.debug("late or duplicate reply dropped", correlation_id=correlation_id)
