"""The one event publisher of a process: events leave the request path at once and reach ``BW_EVENTS`` in batches.

``emit`` only appends to a bounded buffer and never blocks, awaits or raises: a request never waits for, nor
fails because of, an event. A background task drains the buffer with core NATS publishes (a few µs each, no
round trip) that the ``BW_EVENTS`` stream captures. Only the last event of each batch asks JetStream for an
acknowledgement (a reply subject on this publisher's confirmation inbox): one stream stores one connection's
messages in order, so an acknowledged last event vouches for its batch, and a refused, unanswered ("no
responders": the stream is gone) or late acknowledgement counts the whole batch as lost. Nothing is hidden:
``report()`` (health, the replica heartbeat) shows what was emitted, confirmed and lost, and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from backworks.pipeline.tasks import cancel

Event = BaseModel | dict[str, Any]
"""A contract model, or (on the hot path of the gateway) a dict already shaped like one: no validation cost."""

log = structlog.get_logger("backworks.events")

DEFAULT_MAX_BUFFER = 10_000
"""Events waiting to be sent, at most; beyond it new events are dropped (and counted): memory stays bounded."""
MAX_BATCH = 256
"""Events sent under one acknowledgement."""
CONFIRM_TIMEOUT = 5.0
"""Seconds JetStream has to acknowledge a batch before it is counted as lost."""
STOP_FLUSH_TIMEOUT = 2.0
"""Seconds ``stop`` spends sending what is still buffered."""
DEFAULT_LINGER = 0.005
"""Seconds the publisher waits, once an event is buffered, for more to join its batch. Under load a request's events
then share one socket write, one broker read and one acknowledgement with other requests' (at ~500 requests/s:
one batch per ~2-3 requests instead of about one per request); an event reaches the stream at most this much later.
0 sends each wake-up's events at once."""
RECONNECT_POLL = 0.25
"""Seconds between looks at a disconnected client: events wait in the buffer (bounded) meanwhile."""
NO_RESPONDERS = "503"


def encode(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of an event dict (orjson: what ``json.dumps(separators=(",", ":"), ensure_ascii=False)``
    writes, without its per-call encoder setup; the gateway encodes two such events per request)."""
    return orjson.dumps(event)


class Loss(str, Enum):
    """Why events did not reach the stream."""

    OVERFLOW = "overflow"
    """The buffer was full (the broker is slower than the traffic, or gone): the event was never sent."""
    PUBLISH = "publish"
    """The publish itself failed (connection closed)."""
    REFUSED = "refused"
    """The stream refused the batch, or no stream listens on its subjects (no responders)."""
    UNCONFIRMED = "unconfirmed"
    """No acknowledgement within ``CONFIRM_TIMEOUT``: counted lost, though the stream may hold it."""


@dataclass
class Pending:
    count: int
    sent_at: float


class EventPublisher:
    """Publishes events for a whole process, off the request path, counting every loss."""

    def __init__(self, client: Client, *, max_buffer: int = DEFAULT_MAX_BUFFER, linger: float = DEFAULT_LINGER) -> None:
        self.client = client
        self.max_buffer = max_buffer
        self.linger = linger
        self.publisher_id = uuid.uuid4().hex[:12]
        # Under its own identity's private inbox prefix (``_BW_INBOX.<identity>``), which it may subscribe to.
        self._inbox = client.new_inbox()
        self._buffer: list[tuple[str, Event]] = []
        self._wake = asyncio.Event()
        self._awaiting: dict[str, Pending] = {}
        self._batches = 0
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self.emitted = 0
        self.confirmed = 0
        self.lost: Counter[str] = Counter()

    def emit(self, subject: str, event: Event) -> None:
        """Queue ``event`` for ``subject``; returns at once (a full buffer drops and counts it)."""
        self.emitted += 1
        if len(self._buffer) >= self.max_buffer:
            self.lost[Loss.OVERFLOW.value] += 1
            return
        self._buffer.append((subject, event))
        self._wake.set()

    async def start(self) -> None:
        self._sub = await self.client.subscribe(f"{self._inbox}.*", cb=self._on_confirm)
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    async def stop(self) -> None:
        """Send what is buffered (for at most ``STOP_FLUSH_TIMEOUT`` s), then stop; the rest is counted lost."""
        await cancel(self._task)
        self._task = None
        if self._buffer and self.client.is_connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_all(), STOP_FLUSH_TIMEOUT)
                await asyncio.wait_for(self.client.flush(), STOP_FLUSH_TIMEOUT)
        if self._buffer:
            self.lost[Loss.PUBLISH.value] += len(self._buffer)
            self._buffer = []
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def report(self) -> dict[str, int]:
        """What health and the heartbeat show: emitted, confirmed, waiting, lost (total and per reason)."""
        awaiting = sum(p.count for p in self._awaiting.values())
        lost = sum(self.lost.values())
        return {
            "emitted": self.emitted,
            "confirmed": self.confirmed,
            "pending": len(self._buffer) + awaiting,
            "lost": lost,
            **{f"lost_{reason}": count for reason, count in self.lost.items()},
        }

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CONFIRM_TIMEOUT / 2)
            if self.linger > 0 and len(self._buffer) < MAX_BATCH:
                await asyncio.sleep(self.linger)  # let other requests' events join this batch
            self._wake.clear()
            if self.client.is_connected:
                await self._send_all()
            else:
                # Not into nats-py's reconnect buffer: a close while disconnected would fail flushing it.
                await asyncio.sleep(RECONNECT_POLL)
            self._expire(time.monotonic())

    async def _send_all(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
            await self._send(batch)

    async def _send(self, batch: list[tuple[str, Event]]) -> None:
        self._batches += 1
        token = str(self._batches)
        last = len(batch) - 1
        try:
            for index, (subject, event) in enumerate(batch):
                data = event.model_dump_json().encode() if isinstance(event, BaseModel) else encode(event)
                if index == last:
                    self._awaiting[token] = Pending(len(batch), time.monotonic())
                    await self.client.publish(subject, data, reply=f"{self._inbox}.{token}")
                else:
                    await self.client.publish(subject, data)
        except Exception as exc:
            self._awaiting.pop(token, None)
            self.lost[Loss.PUBLISH.value] += len(batch)
            log.warning("events not published", count=len(batch), error=repr(exc))

    async def _on_confirm(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        pending = self._awaiting.pop(token, None)
        if pending is None:
            return  # already counted as unconfirmed
        status = msg.headers.get("Status") if msg.headers else None
        if status == NO_RESPONDERS or b'"error"' in msg.data:
            self.lost[Loss.REFUSED.value] += pending.count
            log.warning("events refused by the stream", count=pending.count, reply=msg.data[:200], status=status)
        else:
            self.confirmed += pending.count

    def _expire(self, now: float) -> None:
        late = [token for token, p in self._awaiting.items() if now - p.sent_at > CONFIRM_TIMEOUT]
        for token in late:
            count = self._awaiting.pop(token).count
            self.lost[Loss.UNCONFIRMED.value] += count
            log.warning("events unconfirmed", count=count, timeout=CONFIRM_TIMEOUT)
