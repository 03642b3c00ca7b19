"""Routing around a stage that holds an envelope past its time limit (a frozen or starved replica).

A replica's executor times out a slow hook itself; but a replica that is stopped (SIGSTOP, a frozen VM), whose
loop is blocked, or that is starved keeps the message un-acked and nothing happens until JetStream's ack
deadline redelivers it (to the same frozen replica, if it is the only one) or the request's deadline passes.
The forwarder that handed the envelope to a stage knows its time limit, so it watches each hand-off:

- ``timeout_ms`` + ``STALL_MARGIN`` after the hand-off (for a co-located stage, plus the time limits of the stages
  its process runs in memory after it: ``expected_hold_ms``), the stage's durable consumer is asked once (for every
  hand-off due at that moment together) how far it has acknowledged; a message at or below its ack floor is done.
- A message still in the stream is claimed by deleting it (work-queue retention: a deleted message is never
  delivered again; a message the stage acknowledged meanwhile is already gone and the delete says so).
- An optional stage is then skipped (``timeout``, noted and recorded as for any failed optional stage) and the
  envelope goes on to the next stage. A critical stage that has one live replica holding the message (frozen,
  or crashed before its heartbeat went stale) fails the request at once with ``timeout`` naming the stage (a 504)
  instead of at the request's deadline, and the envelope goes to the dead letters (``dlq replay`` can run it
  again); with more live replicas, JetStream's redelivery to another replica is left to save the request.

A late result of the stage, if the replica ever resumes, is dropped harmlessly: its hand-off to the next stage
carries the same ``Nats-Msg-Id`` the forwarder used (JetStream de-duplicates it), and a late reply finds no
gateway waiting for it. Hand-offs cost one dict entry and one heap push; the sweep costs one consumer-info
request per stage and sweep, not per message.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from backworks.contracts.envelope import Stage
from backworks.contracts.names import PIPELINE_STREAM, stage_durable
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.stalls")

STALL_MARGIN = 0.2
"""Seconds past a stage's time limit before its hold of an envelope counts as a stall (hops and scheduling)."""
SWEEP_INTERVAL = 0.05
"""Seconds between sweeps while hand-offs are being watched."""
PROBE_TIMEOUT = 0.5
"""Seconds a consumer-info or delete request of a sweep may take."""


@dataclass(order=True)
class Held:
    """A hand-off being watched: the envelope as sent, where, and when it is due."""

    due: float
    order: int
    stage: Stage = field(compare=False)
    sequence: int = field(compare=False)
    """Stream sequence of the hand-off in ``BW_PIPELINE``."""
    data: bytes = field(compare=False)
    """The envelope as it was handed to ``stage`` (cursor on it)."""
    stalled_for: float = field(default=0.0, compare=False)


def expected_hold_ms(itinerary: list[Stage], cursor: int) -> int:
    """How long the stage at ``cursor`` may hold a hand-off: its time limit, plus those of the stages after it in
    the same co-location group (one process runs them all, in memory, before it hands on or acknowledges)."""
    first = itinerary[cursor]
    hold = first.timeout_ms
    if first.colocate is None:
        return hold
    for stage in itinerary[cursor + 1 :]:
        if stage.colocate != first.colocate:
            break
        hold += stage.timeout_ms
    return hold


Stalled = Callable[[Held, bool], Awaitable[None]]
"""Called with a hand-off claimed back from a stage that held it, and whether the stage was critical-and-alone."""


class StallWatch:
    """Watches hand-offs and gives back the envelopes a stage holds past its time limit (see module docstring)."""

    def __init__(self, js: JetStreamContext, on_stalled: Stalled, live_replicas: Callable[[str], int]) -> None:
        self.js = js
        self.on_stalled = on_stalled
        self.live_replicas = live_replicas
        self._heap: list[Held] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.routed_around = 0
        self.timed_out = 0

    def __len__(self) -> int:
        return len(self._heap)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="stall-watch")

    async def stop(self) -> None:
        await cancel(self._task)
        self._heap.clear()

    def watch(self, stage: Stage, sequence: int, data: bytes, hold_ms: int | None = None) -> None:
        """Watch a hand-off to ``stage``, expected back within ``hold_ms`` (default: the stage's time limit)."""
        due = time.monotonic() + (stage.timeout_ms if hold_ms is None else hold_ms) / 1000 + STALL_MARGIN
        heapq.heappush(self._heap, Held(due, next(self._order), stage, sequence, data))
        if len(self._heap) == 1:
            self._wake.set()

    async def _sweep_forever(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(max(SWEEP_INTERVAL, self._heap[0].due - time.monotonic()) if self._heap else 0)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker restarting: the next sweep tries again
                log.warning("stall sweep failed", error=repr(exc))

    async def sweep(self, now: float | None = None) -> None:
        """Settle every hand-off that is due: done, or claimed back and handed to ``on_stalled``."""
        now = time.monotonic() if now is None else now
        due: dict[str, list[Held]] = {}
        while self._heap and self._heap[0].due <= now:
            held = heapq.heappop(self._heap)
            due.setdefault(stage_durable(held.stage.instance, held.stage.phase), []).append(held)
        for durable, items in due.items():
            try:
                info = await self.js.consumer_info(PIPELINE_STREAM, durable, timeout=PROBE_TIMEOUT)
            except NotFoundError:
                continue  # the stage's consumer is gone: nothing holds these
            floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
            delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
            for held in items:
                if held.sequence > floor:
                    await self._settle(held, held.sequence <= delivered, now)

    async def _settle(self, held: Held, delivered: bool, now: float) -> None:
        stage = held.stage
        alone = delivered and self.live_replicas(stage.instance) <= 1
        if stage.critical and not alone:
            return  # queued behind others, or another replica will get it on redelivery: the deadline decides
        try:
            await self.js.delete_msg(PIPELINE_STREAM, held.sequence)
        except NotFoundError:
            return  # acknowledged out of order, after the floor was read: done
        held.stalled_for = now - held.due + stage.timeout_ms / 1000 + STALL_MARGIN
        if stage.critical:
            self.timed_out += 1
        else:
            self.routed_around += 1
        try:
            await self.on_stalled(held, stage.critical)
        except Exception as exc:  # the next hand-off failed: the request's deadline answers it
            log.warning("could not route around a stalled stage", stage=stage.label, error=repr(exc))
