"""The gateway's reply inbox: one core-NATS subscription, a future per waiting request.

A reply is parsed here, in the subscription's callback, so that only a valid envelope for a correlation id
the gateway is waiting on ever reaches a request. Late replies (the request already timed out) and
duplicates (a redelivered last stage) find no waiting future and are dropped; so is anything that is not a
valid envelope, or whose ``correlation_id`` is not the one its subject names. Both are counted (the health
report shows them); the request keeps waiting for its real reply, or times out as usual.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import REPLY_RESEND_SUBJECT, gateway_inbox, reply_subject
from backworks.pipeline.awaiting import AwaitableMap
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.gateway")

RESEND_PAUSES = (0.0, 0.25, 1.0)
"""Pauses before each request for missed replies after a reconnect (see ``ReplyInbox.ask_again``)."""
INVALID_WARNING_EVERY_S = 10.0
"""At most one warning per this many seconds about invalid replies (a flood of garbage is not a flood of logs)."""


class ReplyInbox:
    """Routes replies on ``_INBOX.bw.<gateway>.<correlation>`` to the request awaiting them."""

    def __init__(self, client: Client, gateway_id: str) -> None:
        self.client = client
        self.gateway_id = gateway_id
        self.waiting: AwaitableMap[str, Envelope] = AwaitableMap()
        self.dropped = 0
        """Replies nobody waits for any more (late or duplicate)."""
        self.invalid = 0
        """Replies for a waiting request that are not a valid envelope for it (dropped; the request waits on)."""
        self._sub: Subscription | None = None
        self._prefix_len = len(reply_subject(gateway_id, ""))
        self._next_warning = 0.0
        self._asking: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self.client.subscribe(
            gateway_inbox(self.gateway_id), cb=self._on_reply, pending_msgs_limit=-1
        )

    async def stop(self) -> None:
        if self._asking is not None:
            await cancel(self._asking)
        if self._sub is not None:
            await self._sub.unsubscribe()
        self.waiting.cancel_all()

    async def reconnected(self) -> None:
        """The client reconnected: ask for missed replies in the background (see ``ask_again``)."""
        if self._asking is not None and not self._asking.done():
            self._asking.cancel()  # a newer reconnect: ask from the start
        self._asking = asyncio.create_task(self.ask_again(), name="ask-for-missed-replies")

    async def ask_again(self) -> None:
        """After a reconnect: ask every forwarder for the replies it sent this gateway lately (one published while
        the connection was down was dropped). Asked at once and twice more, as the new subscription's interest
        may take a moment to reach every node of a cluster; the repeats are dropped here as duplicates."""
        for pause in RESEND_PAUSES:
            await asyncio.sleep(pause)
            try:
                await self.client.publish(REPLY_RESEND_SUBJECT, self.gateway_id.encode())
            except Exception as exc:  # disconnected again: the next reconnect asks again
                log.info("could not ask for missed replies", error=repr(exc))
                return

    def subject(self, correlation_id: str) -> str:
        return reply_subject(self.gateway_id, correlation_id)

    def expect(self, correlation_id: str, timeout: float) -> asyncio.Future[Envelope]:
        """The future of ``correlation_id``'s reply; ``TimeoutError`` when none arrives within ``timeout`` s."""
        return self.waiting.expect(correlation_id, timeout)

    def forget(self, correlation_id: str) -> None:
        self.waiting.forget(correlation_id)

    def report(self) -> dict[str, int]:
        """The counts the health report shows."""
        return {
            "waiting": len(self.waiting),
            "dropped_late_or_duplicate": self.dropped,
            "dropped_invalid": self.invalid,
        }

    async def _on_reply(self, msg: Msg) -> None:
        correlation_id = msg.subject[self._prefix_len :]
        if correlation_id not in self.waiting:  # checked first: nothing is parsed for nobody
            self.dropped += 1
            log.debug("late or duplicate reply dropped", correlation_id=correlation_id)
            return
        try:
            envelope = Envelope.from_json(msg.data)
        except ValidationError as exc:
            kind = exc.errors()[0]["type"] if exc.error_count() else "invalid"
            # Never the message itself, nor pydantic's text (it quotes the input): garbage may carry anything.
            self._reject(correlation_id, f"not a valid envelope ({kind})")
            return
        if envelope.correlation_id != correlation_id:
            self._reject(correlation_id, "the envelope's correlation_id is not the one its subject names")
            return
        if not self.waiting.resolve(correlation_id, envelope):  # its waiter just gave up
            self.dropped += 1

    def _reject(self, correlation_id: str, reason: str) -> None:
        self.invalid += 1
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + INVALID_WARNING_EVERY_S
            log.warning("invalid reply dropped", correlation_id=correlation_id, reason=reason, total=self.invalid)
