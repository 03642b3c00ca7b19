"""A lean, continuously-pulling JetStream consumer: the hot path of every stage.

nats-py's ``fetch(batch>1)`` waits out the pull request's expiry for a full batch, and ``fetch(1)``
costs a round trip per message. This keeps a standing pull request topped up instead (like nats.go's
``Consume``): messages are delivered to an inbox as soon as they exist, each handled in its own task,
with at most ``max_inflight`` un-acked messages per replica. Each pull request expires after ``PULL_EXPIRES`` and
is re-issued when the server says so (a 408 status): a replica that stops reading (SIGSTOP, a frozen VM) stops
being handed new messages within that time, so what it holds is all the stall watch has to give to another
replica (``pipeline.stalls``). Silence for longer (no status, no message) means the server forgot the request (a
restart); it is then re-issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from backworks.contracts.names import pull_request_subject

log = structlog.get_logger("backworks.consumer")

PULL_EXPIRES = 1.0
"""Seconds a pull request stands: about as long as a frozen replica goes on being handed new messages."""
KEEPER_INTERVAL = 0.5
"""Seconds between checks that the server still answers our pull requests."""
PULL_SILENCE = PULL_EXPIRES + 1.0
"""Seconds without a message or status while a pull request stands after which it is taken as lost (the server
restarted, or the consumer's leader died on a cluster) and re-issued: a live one ends with a 408 every
``PULL_EXPIRES``."""
DRAIN_MARGIN = 0.5
"""Seconds past ``PULL_EXPIRES`` a stopping consumer waits for the server to end its pull request."""
STATUS = "Status"
PENDING_MESSAGES = "Nats-Pending-Messages"

MessageHandler = Callable[[Msg], Awaitable[None]]


class PullConsumer:
    """Pulls from one durable consumer and runs ``handler`` on each message in its own task."""

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        stream: str,
        config: ConsumerConfig,
        handler: MessageHandler,
        max_inflight: int,
    ) -> None:
        assert config.durable_name, "a stage consumer is durable: replicas share it"
        self.client = client
        self.js = js
        self.stream = stream
        self.config = config
        self.handler = handler
        self.max_inflight = max(1, max_inflight)
        self.durable: str = config.durable_name
        self._pull_subject = pull_request_subject(stream, self.durable)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._requested = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_seen = time.monotonic()
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._pull_ended = asyncio.Event()
        """Set when the server ended our last pull request while stopping (``stop(wait_pull=True)``)."""

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def ensure_consumer(self) -> None:
        """Create the shared durable, or bring its settings up to date (idempotent across replicas)."""
        await self.js.add_consumer(self.stream, self.config)

    async def start(self) -> None:
        await self.ensure_consumer()
        self._inbox = self.client.new_inbox()
        self._sub = await self.client.subscribe(self._inbox, cb=self._on_message, pending_msgs_limit=-1)
        await self._top_up()
        self._keeper = asyncio.create_task(self._keep_alive(), name=f"keeper-{self.durable}")

    async def _top_up(self) -> None:
        wanted = self.max_inflight - self._requested - len(self._tasks)
        if wanted <= 0 or self._stopping or not self.client.is_connected:
            return
        request = {
            "batch": wanted,
            "expires": int(PULL_EXPIRES * 1e9),
        }
        self._requested += wanted
        await self.client.publish(self._pull_subject, json.dumps(request).encode(), reply=self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers
        status = headers.get(STATUS) if headers else None
        if status:
            await self._on_status(status, headers or {})
            return
        self._requested = max(0, self._requested - 1)
        task = asyncio.create_task(self._run(msg))
        self._tasks.add(task)
        if self._requested + len(self._tasks) <= self.max_inflight // 2:
            await self._top_up()

    async def _on_status(self, status: str, headers: dict[str, str]) -> None:
        if status == "100":  # idle heartbeat: the pull request is alive
            return
        # 408 (request expired), 409 (max waiting, leadership change, consumer deleted) end a pull request.
        pending = headers.get(PENDING_MESSAGES)
        self._requested = max(0, self._requested - int(pending)) if pending else 0
        if self._stopping and self._requested == 0:
            self._pull_ended.set()
        if status == "409" and "Deleted" in headers.get("Description", ""):
            log.warning("consumer deleted; recreating", consumer=self.durable)
            await self._recreate()
        await self._top_up()

    async def _run(self, msg: Msg) -> None:
        try:
            await self.handler(msg)
        except Exception:  # the handler isolates plugin errors; this is a bug in the host itself
            log.exception("message handler crashed", consumer=self.durable)
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]  # the running task
            if self._requested + len(self._tasks) <= self.max_inflight // 2:
                await self._top_up()

    async def _recreate(self) -> None:
        try:
            await self.ensure_consumer()
        except Exception as exc:
            log.warning("cannot recreate consumer", consumer=self.durable, error=repr(exc))

    async def _keep_alive(self) -> None:
        """Re-issue the pull request when the server stops answering it (see ``PULL_SILENCE``)."""
        while not self._stopping:
            await asyncio.sleep(KEEPER_INTERVAL)
            if not self.client.is_connected:
                continue
            silent = time.monotonic() - self._last_seen
            if (self._requested > 0 and silent > PULL_SILENCE) or silent > 2 * PULL_SILENCE + 1:
                self._requested = 0
                await self._recreate()
                self._last_seen = time.monotonic()
                await self._top_up()

    async def reset(self) -> None:
        """After a reconnect: the server no longer holds our pull requests."""
        self._requested = 0
        await self._recreate()
        await self._top_up()

    async def stop(self, drain_timeout: float = 5.0, *, wait_pull: bool = False) -> None:
        """Stop pulling, let in-flight messages finish (unfinished ones are redelivered elsewhere).

        With ``wait_pull``, the standing pull request is left to expire (at most ``PULL_EXPIRES``) before the inbox
        closes: a message the server sends meanwhile is still run here, not lost in a closed inbox until its ack
        deadline (a replica stopped by ``backworks scale`` drains without failing what it was sent)."""
        self._stopping = True
        if self._keeper:
            self._keeper.cancel()
        if wait_pull and self._requested > 0 and self.client.is_connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pull_ended.wait(), min(drain_timeout, PULL_EXPIRES + DRAIN_MARGIN))
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe failed", error=repr(exc))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout)
