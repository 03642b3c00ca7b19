"""The replies a process sent in the last few seconds, sent again when their gateway asks after a reconnect.

A reply is a core-NATS message to the gateway's inbox (``_INBOX.bw.<gateway>.<correlation>``), not stored: while
the gateway's connection is down (its node restarting, a broker restart), a reply published meanwhile is dropped
and its client would wait until the deadline although the handler ran. So every forwarder keeps what it replied
for ``KEEP_S`` seconds (bounded by count and bytes), and a gateway that reconnected publishes its id on
``bw.replies.resend``; each forwarder publishes that gateway's kept replies again. The gateway drops those it
already had (no one waits for them any more), so a repeat is harmless.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import NamedTuple

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from backworks.contracts.names import REPLY_RESEND_SUBJECT, reply_subject

log = structlog.get_logger("backworks.replies")

KEEP_S = 5.0
"""Seconds a reply is kept: longer than a gateway's reconnect to another node (tens of milliseconds) or to a
restarted broker (about a second), shorter than most request deadlines."""
MAX_KEPT = 4096
"""Replies kept at most (the oldest go first)."""
MAX_KEPT_BYTES = 16 * 1024 * 1024
"""Bytes of replies kept at most: a reply holds the response body."""
GATEWAY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a gateway id looks like: one subject token, no wildcard."""


class Kept(NamedTuple):
    at: float
    subject: str
    data: bytes


class RecentReplies:
    """One process's recent replies, and its answer to ``bw.replies.resend``."""

    def __init__(self, client: Client, keep_s: float = KEEP_S) -> None:
        self.client = client
        self.keep_s = keep_s
        self.kept: deque[Kept] = deque()
        self.bytes = 0
        self.resent = 0
        """Replies published again so far."""
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.client.subscribe(REPLY_RESEND_SUBJECT, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection is already closed: nothing to undo
                log.debug("resend subscription not removed", error=repr(exc))
            self._sub = None

    def keep(self, subject: str, data: bytes) -> None:
        """Remember a reply just published on ``subject``."""
        now = time.monotonic()
        self.kept.append(Kept(now, subject, data))
        self.bytes += len(data)
        self._expire(now)

    def _expire(self, now: float) -> None:
        oldest = now - self.keep_s
        kept = self.kept
        while kept and (kept[0].at < oldest or len(kept) > MAX_KEPT or self.bytes > MAX_KEPT_BYTES):
            self.bytes -= len(kept.popleft().data)

    async def _on_request(self, msg: Msg) -> None:
        gateway = msg.data.decode("utf-8", "replace").strip()
        if not GATEWAY_ID.fullmatch(gateway):
            log.warning("reply resend request ignored: not a gateway id")
            return
        await self.resend(gateway)

    async def resend(self, gateway: str) -> int:
        """Publish again every kept reply to ``gateway``; returns how many."""
        self._expire(time.monotonic())
        prefix = reply_subject(gateway, "")
        count = 0
        for kept in list(self.kept):
            if kept.subject.startswith(prefix):
                await self.client.publish(kept.subject, kept.data)
                count += 1
        if count:
            self.resent += count
            log.info("replies sent again after the gateway reconnected", gateway=gateway, replies=count)
        return count
