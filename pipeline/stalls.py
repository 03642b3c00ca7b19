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
  envelope goes on to the next stage (``Verdict.SKIP``).
- A critical stage with another replica that can serve it (``Liveness.others_could_serve``: a second live
  replica, or the one that stopped heartbeating since the hand-off was not the only one) gets the envelope again
  (``Verdict.RETAKE``): it is published anew to the same stage, where a replica that pulls work takes it (a
  frozen one no longer asks for any: its pull request expires, see ``consumer.PULL_EXPIRES``), and watched again,
  at most ``MAX_RETAKES`` times, so that one poisonous envelope cannot stop every replica in turn.
- A critical stage whose only replica holds the message (frozen, or crashed before its heartbeat went stale)
  fails the request at once with ``timeout`` naming the stage (a 504) instead of at the request's deadline, and
  the envelope goes to the dead letters (``Verdict.FAIL``; ``dlq replay`` can run it again).
- Unless that replica is stranded: its server stopped answering (``LivenessView.stranded``, a cluster node frozen
  or lost), so it cannot hand on until it has failed over to another node. The hold is then watched again from now
  (``Verdict.WAIT``), within the request's deadline.

A stage cannot hand on while the broker does not answer (a cluster moving a stream's leader, a node leaving): its
hand-off is retried (``AckedPublisher``), telling JetStream it is still working. So a hold that such a disruption
overlapped is not judged by the time since the hand-off: the stage gets its whole time limit again from the moment
this process saw the disruption (a sweep the broker did not answer, a reconnect or a retried publish counted by
``disruptions``). Only an undisturbed hold past the limit is a stall; the request's deadline still bounds both.

A late result of the stage, if the replica ever resumes, is dropped harmlessly: a message it finds claimed back
(deleted) before it runs is acknowledged without running (``StageHost``); its hand-off to the next stage carries
the same ``Nats-Msg-Id`` the retaken copy's hand-off does (JetStream de-duplicates it), and a late reply finds no
gateway waiting for it. Hand-offs cost one dict entry and one heap push; the sweep costs one consumer-info
request per stage and sweep, not per message.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.names import PIPELINE_STREAM, stage_durable
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.stalls")

STALL_MARGIN = 0.2
"""Seconds past a stage's time limit before its hold of an envelope counts as a stall (hops and scheduling)."""
SWEEP_INTERVAL = 0.05
"""Seconds between sweeps while hand-offs are being watched."""
PROBE_TIMEOUT = 0.5
"""Seconds a consumer-info or delete request of a sweep may take."""
MAX_RETAKES = 3
"""Times one hand-off to a critical stage is given to the stage again after a replica held it past its limit."""


CLAIMED = "claimed"
"""Why a replica dropped a message without running it: a stall watch had claimed it back (``StageHost``)."""


def stored_at(ack_subject: str) -> float | None:
    """When the stream stored a delivered message (seconds since the epoch), read from its ack subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>``, or with domain and account hash
    ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>.<token>``)."""
    tokens = ack_subject.split(".")
    index = 7 if len(tokens) == 9 else 9
    try:
        return int(tokens[index]) / 1e9
    except (IndexError, ValueError):
        return None


def may_be_claimed(ack_subject: str, limit: float, now: float | None = None) -> bool:
    """Whether a message was stored so long ago (more than the stage's time ``limit`` plus ``STALL_MARGIN``) that a
    stall watch may have claimed it back: then, and only then, is it worth asking the stream whether it still
    holds it before running it (a frozen replica resuming finds the messages it had pulled retaken by others)."""
    stored = stored_at(ack_subject)
    now = time.time() if now is None else now
    return stored is not None and now - stored > limit + STALL_MARGIN


class Verdict(str, Enum):
    """What becomes of an envelope claimed back from a stage that held it past its time limit."""

    SKIP = "skip"
    """An optional stage: the request goes on without it."""
    RETAKE = "retake"
    """A critical stage another replica can serve: the envelope is handed to the stage again."""
    FAIL = "fail"
    """A critical stage with no other replica: the request fails (504) and the envelope is dead-lettered."""
    WAIT = "wait"
    """A critical stage with no other replica, whose replicas' server does not answer (``Liveness.stranded``):
    left to it and watched again for its whole hold; they are failing over to another node."""


class Liveness(Protocol):
    """What the stall watch needs to know about a stage's replicas (``LivenessView``)."""

    def others_could_serve(self, instance: str, handed_at: float) -> bool: ...

    def stranded(self, instance: str) -> bool: ...


@dataclass(eq=False, slots=True)
class Held:
    """A hand-off being watched: the envelope as sent, where, and when it is due."""

    due: float
    order: int
    stage: Stage
    sequence: int
    """Stream sequence of the hand-off in ``BW_PIPELINE``."""
    data: bytes
    """The envelope as it was handed to ``stage`` (cursor on it)."""
    handed_at: float = 0.0
    """When it was handed over (monotonic)."""
    retakes: int = 0
    """How many times this envelope was already given to ``stage`` again (``Verdict.RETAKE``)."""
    stalled_for: float = 0.0
    hold: float = 0.0
    """Seconds the stage may hold it (its time limit, plus ``STALL_MARGIN``)."""
    since: float = 0.0
    """When its current hold began: the hand-off, or the last disruption it overlapped (monotonic)."""


Disruptions = Callable[[], int]
"""How many times so far this process found the broker not answering (reconnects, retried publishes): a change
between two sweeps means a disruption in between."""


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


Stalled = Callable[[Held, Verdict], Awaitable[None]]
"""Called with a hand-off claimed back from a stage that held it, and what to do with it."""


class StallWatch:
    """Watches hand-offs and gives back the envelopes a stage holds past its time limit (see module docstring)."""

    def __init__(
        self, js: JetStreamContext, on_stalled: Stalled, liveness: Liveness, disruptions: Disruptions | None = None
    ) -> None:
        self.js = js
        self.on_stalled = on_stalled
        self.liveness = liveness
        self.disruptions = disruptions
        self._disruptions_seen = disruptions() if disruptions is not None else 0
        self.disrupted_at = float("-inf")
        """When this process last saw the broker disrupted (monotonic): holds that overlapped it start again."""
        self.extended = 0
        self._heap: list[tuple[float, int, Held]] = []
        """(due, order, hand-off): tuples compare in C, ~1 µs a push and pop against ~4 µs for ordered
        dataclasses (every hand-off is pushed once)."""
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.routed_around = 0
        self.timed_out = 0
        self.retaken = 0

    def __len__(self) -> int:
        return len(self._heap)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="stall-watch")

    async def stop(self) -> None:
        await cancel(self._task)
        self._heap.clear()

    def watch(self, stage: Stage, sequence: int, data: bytes, hold_ms: int | None = None, retakes: int = 0) -> None:
        """Watch a hand-off to ``stage``, expected back within ``hold_ms`` (default: the stage's time limit);
        ``retakes``: how many times it was already claimed back and handed to the stage again."""
        now = time.monotonic()
        hold = (stage.timeout_ms if hold_ms is None else hold_ms) / 1000 + STALL_MARGIN
        held = Held(now + hold, next(self._order), stage, sequence, data, now, retakes, hold=hold, since=now)
        heapq.heappush(self._heap, (held.due, held.order, held))
        if len(self._heap) == 1:
            self._wake.set()

    def disrupted(self, now: float | None = None) -> None:
        """The broker did not answer this process just now: every hold in progress gets its time again."""
        self.disrupted_at = time.monotonic() if now is None else now

    def _again(self, held: Held, since: float | None = None) -> None:
        """Watch ``held`` for its whole hold again, counted from ``since`` (default: the last disruption); not
        once its request's deadline has passed: nobody waits for it any more."""
        if Envelope.from_json(held.data).remaining() <= 0:
            return
        held.since = self.disrupted_at if since is None else since
        held.due = held.since + held.hold
        held.order = next(self._order)
        self.extended += 1
        heapq.heappush(self._heap, (held.due, held.order, held))

    async def _sweep_forever(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(max(SWEEP_INTERVAL, self._heap[0][0] - time.monotonic()) if self._heap else 0)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker restarting: the next sweep tries again
                log.warning("stall sweep failed", error=repr(exc))

    async def sweep(self, now: float | None = None) -> None:
        """Settle every hand-off that is due: done, or claimed back and handed to ``on_stalled``."""
        now = time.monotonic() if now is None else now
        if self.disruptions is not None and (count := self.disruptions()) != self._disruptions_seen:
            self._disruptions_seen = count
            self.disrupted(now)
        due: dict[str, list[Held]] = {}
        while self._heap and self._heap[0][0] <= now:
            held = heapq.heappop(self._heap)[2]
            if held.since < self.disrupted_at:  # the stage may have been unable to hand on meanwhile
                self._again(held)
                continue
            due.setdefault(stage_durable(held.stage.instance, held.stage.phase), []).append(held)
        for durable, items in due.items():
            try:
                info = await self.js.consumer_info(PIPELINE_STREAM, durable, timeout=PROBE_TIMEOUT)
            except NotFoundError:  # no replica ever attached (or the consumer is gone): nobody holds these
                for held in items:
                    await self._settle(held, False, now)  # an optional stage is skipped; a critical one waits
                continue
            except (
                APIError,
                TimeoutError,
                NatsError,
            ) as exc:  # no stream leader, a node leaving: not the stage's fault
                log.info("stall sweep unanswered; holds start again", stage=durable, error=repr(exc))
                self.disrupted(now)
                for held in items:
                    self._again(held)
                continue
            floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
            delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
            for held in items:
                if held.sequence > floor:
                    await self._settle(held, held.sequence <= delivered, now)

    def verdict(self, held: Held, delivered: bool) -> Verdict | None:
        """What to do with ``held``, due and not acknowledged; None: leave it (queued behind others, the deadline
        decides)."""
        stage = held.stage
        if not stage.critical:
            return Verdict.SKIP
        if not delivered:
            return None
        if held.retakes < MAX_RETAKES and self.liveness.others_could_serve(stage.instance, held.handed_at):
            return Verdict.RETAKE
        if self.liveness.stranded(stage.instance):
            return Verdict.WAIT
        return Verdict.FAIL

    async def _settle(self, held: Held, delivered: bool, now: float) -> None:
        stage = held.stage
        verdict = self.verdict(held, delivered)
        if verdict is None:
            return
        if verdict is Verdict.WAIT:
            log.info("stage's replicas are failing over; hold watched again", stage=stage.label)
            self._again(held, now)
            return
        try:
            await self.js.delete_msg(PIPELINE_STREAM, held.sequence)
        except NotFoundError:
            return  # acknowledged out of order, after the floor was read: done
        except APIError as exc:  # "no message found": acknowledged meanwhile, as above (a 400 from some servers)
            log.info("stalled hand-off not claimed back", stage=stage.label, error=exc.description)
            return
        except (TimeoutError, NatsError):  # no answer (a leader moving): not claimed, so it is watched again
            self.disrupted(now)
            self._again(held)
            return
        held.stalled_for = now - held.handed_at
        if verdict is Verdict.SKIP:
            self.routed_around += 1
        elif verdict is Verdict.RETAKE:
            self.retaken += 1
        else:
            self.timed_out += 1
        try:
            await self.on_stalled(held, verdict)
        except Exception as exc:  # the next hand-off failed: the request's deadline answers it
            log.warning("could not route around a stalled stage", stage=stage.label, error=repr(exc))
