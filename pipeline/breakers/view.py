"""One process's picture of one instance's fleet-wide breaker, and the sliding-window arithmetic.

Everything here is synchronous and in memory: the KV watch feeds the view (``apply_*``), this process's own
outcomes change it at once (``add``), and :mod:`~backworks.pipeline.breakers.mirror` writes our window record
through to NATS KV in the background. See :mod:`backworks.pipeline.breakers` for the semantics.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from backworks.contracts.blueprint import BreakerSettings, WindowType
from backworks.contracts.breakers import (
    FAILED,
    SLOW,
    BreakerState,
    ProbeRecord,
    StateRecord,
    StoredState,
    WindowRecord,
)

R = TypeVar("R", StateRecord, WindowRecord, ProbeRecord)
Clock = Callable[[], float]
Tally = tuple[float, int, int, int]
"""``(at, calls, failed, slow)``: one call, or one epoch second of calls."""


@dataclass(frozen=True)
class Versioned(Generic[R]):
    """A record and the KV revision it was read from or written at."""

    record: R
    revision: int


@dataclass(frozen=True)
class Rates:
    """What a window (or a half-open generation's probes) holds."""

    calls: int = 0
    failed: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        return 100 * self.failed / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return 100 * self.slow / self.calls if self.calls else 0.0

    def verdict(self, settings: BreakerSettings) -> str | None:
        """Why these rates open the breaker, or None (the caller checks ``minimum_calls`` / probe count)."""
        if self.failure_rate >= settings.failure_rate:
            return f"failure rate {self.failure_rate:.0f}% of {self.calls} calls (threshold {settings.failure_rate:g}%)"
        if self.slow_call_rate >= settings.slow_call_rate:
            return (
                f"slow-call rate {self.slow_call_rate:.0f}% of {self.calls} calls (>= {settings.slow_call_duration_ms}"
                f" ms; threshold {settings.slow_call_rate:g}%)"
            )
        return None


def utc(timestamp: float | None) -> datetime | None:
    """An epoch timestamp as an aware UTC datetime (never a naive local one)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def _at(tally: Tally) -> float:
    return tally[0]


def _sum(tallies: Iterable[Tally]) -> Rates:
    calls = failed = slow = 0
    for _, c, f, s in tallies:
        calls, failed, slow = calls + c, failed + f, slow + s
    return Rates(calls, failed, slow)


class OwnWindow:
    """This process's own share of the window: its last ``size`` calls, or its calls per second of the last ``size``."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.by_time = settings.sliding_window.type is WindowType.TIME
        self.size = settings.sliding_window.size
        self._calls: deque[Tally] = deque(maxlen=None if self.by_time else self.size)
        self.bad = 0
        """Tallies held with a failed or slow call (expired ones count until ``tallies`` drops them): while 0, this
        share cannot open the breaker, and ``FleetView.trip_reason`` need not merge the window."""

    def add(self, now: float, outcome: int) -> None:
        failed, slow = int(bool(outcome & FAILED)), int(bool(outcome & SLOW))
        second = float(int(now))
        calls = self._calls
        if self.by_time and calls and calls[-1][0] == second:
            _, count, f, s = calls.pop()
            if (failed or slow) and not (f or s):
                self.bad += 1
            calls.append((second, count + 1, f + failed, s + slow))
            return
        if calls.maxlen is not None and len(calls) == calls.maxlen and (calls[0][2] or calls[0][3]):
            self.bad -= 1  # the oldest call, about to leave the count window, was a bad one
        if failed or slow:
            self.bad += 1
        calls.append((second if self.by_time else now, 1, failed, slow))

    def tallies(self, now: float) -> list[Tally]:
        if self.by_time:
            calls = self._calls
            while calls and calls[0][0] <= now - self.size:
                _, _, f, s = calls.popleft()
                if f or s:
                    self.bad -= 1
        return list(self._calls)

    def clear(self) -> None:
        self._calls.clear()
        self.bad = 0


class FleetView:
    """The state, every writer's window and the probe slots of one instance, as this process knows them."""

    def __init__(self, instance: str, settings: BreakerSettings, me: str) -> None:
        self.instance = instance
        self.settings = settings
        self.me = me
        self.state: Versioned[StateRecord] | None = None
        self.windows: dict[str, Versioned[WindowRecord]] = {}
        """Other writers' window records (ours is ``own``: authoritative here, ahead of KV)."""
        self.probes: dict[int, Versioned[ProbeRecord]] = {}
        self.own = OwnWindow(settings)
        self.own_generation = 0
        self._clean: dict[str, tuple[Versioned[WindowRecord], bool]] = {}
        """Writer -> (its window record as last judged, whether it holds no failed or slow call)."""

    # --- reading -------------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.state.record.generation if self.state else 0

    @property
    def opened_at(self) -> float | None:
        return self.state.record.opened_at if self.state and self.state.record.state is StoredState.OPEN else None

    @property
    def reset_at(self) -> float | None:
        """When the open breaker half-opens (epoch seconds)."""
        return self.state.record.reset_at if self.state and self.state.record.state is StoredState.OPEN else None

    @property
    def wait_in_open(self) -> float:
        return self.settings.wait_in_open_ms / 1000

    def effective(self, now: float) -> BreakerState:
        if self.state is None or self.state.record.state is StoredState.CLOSED:
            return BreakerState.CLOSED  # asked before every hand-off: the common answer first
        reset_at = self.reset_at
        if reset_at is not None and now < reset_at:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def rates(self, now: float) -> Rates:
        """The fleet's sliding window: every writer's tallies of this generation, merged."""
        shares = [self.own.tallies(now)]
        for writer, versioned in self.windows.items():
            if writer != self.me and versioned.record.generation == self.generation:
                shares.append(versioned.record.tallies)
        size = self.settings.sliding_window.size
        if self.own.by_time:
            return _sum(t for share in shares for t in share if t[0] > now - size)
        # Each share is in time order: the fleet's newest ``size`` calls are the head of their merge, newest first.
        newest = heapq.merge(*(reversed(share) for share in shares), key=_at, reverse=True)
        return _sum(itertools.islice(newest, size))

    def trip_reason(self, now: float) -> str | None:
        """Why the closed breaker must open now, or None.

        A window with no failed and no slow call cannot open it (both thresholds are > 0): that is known without
        merging the shares, which is what almost every successful call finds (the merge cost ~15 µs per call)."""
        if self.own.bad == 0 and all(self._holds_no_bad_call(w, v) for w, v in self.windows.items() if w != self.me):
            return None
        rates = self.rates(now)
        return rates.verdict(self.settings) if rates.calls >= self.settings.minimum_calls else None

    def _holds_no_bad_call(self, writer: str, versioned: Versioned[WindowRecord]) -> bool:
        known = self._clean.get(writer)
        if known is None or known[0] is not versioned:  # records are replaced, never changed in place
            clean = not any(f or s for _, _, f, s in versioned.record.tallies)
            known = self._clean[writer] = (versioned, clean)
        return known[1]

    def probe_rates(self) -> Rates | None:
        """The outcomes of this generation's probes once every permitted probe has one, else None."""
        outcomes = [
            held.record.outcome
            for held in self.probes.values()
            if held.record.generation == self.generation and held.record.outcome is not None
        ]
        if len(outcomes) < self.settings.permitted_calls_in_half_open:
            return None
        return _sum((0.0, 1, int(bool(o & FAILED)), int(bool(o & SLOW))) for o in outcomes)

    def free_slots(self, now: float, lease: float) -> list[int]:
        """Probe slots nobody holds for this generation (an unfinished claim silent for ``lease`` s lost it)."""
        return [s for s in range(self.settings.permitted_calls_in_half_open) if self.slot_is_free(s, now, lease)]

    def slot_is_free(self, slot: int, now: float, lease: float) -> bool:
        held = self.probes.get(slot)
        if held is None or held.record.generation != self.generation:
            return True
        return held.record.outcome is None and held.record.claimed_at + lease <= now

    def own_record(self, now: float) -> WindowRecord:
        return WindowRecord(generation=self.own_generation, writer=self.me, tallies=self.own.tallies(now), at=now)

    # --- what the watch (or our own writes) tell us ---------------------------------------------------------

    def apply_state(self, record: StateRecord | None, revision: int) -> bool:
        """Take a newer state (None: the key was deleted, i.e. reset by an operator). True if it changed."""
        if self.state is not None and revision <= self.state.revision:
            return False
        self.state = None if record is None else Versioned(record, revision)
        self._follow_generation()
        return True

    def apply_window(self, writer: str, record: WindowRecord | None, revision: int) -> bool:
        return _apply(self.windows, writer, record, revision)

    def apply_probe(self, slot: int, record: ProbeRecord | None, revision: int) -> bool:
        return _apply(self.probes, slot, record, revision)

    def replace(
        self,
        state: Versioned[StateRecord] | None,
        windows: dict[str, Versioned[WindowRecord]],
        probes: dict[int, Versioned[ProbeRecord]],
    ) -> None:
        """Adopt a full snapshot (after a (re)connect: revisions may have restarted if the broker lost the bucket)."""
        self.state, self.windows, self.probes = state, windows, probes
        self._follow_generation()

    def _follow_generation(self) -> None:
        if self.own_generation != self.generation:  # a transition starts every window empty
            self.own_generation = self.generation
            self.own.clear()


K = TypeVar("K", str, int)


def _apply(known: dict[K, Versioned[R]], key: K, record: R | None, revision: int) -> bool:
    held = known.get(key)
    if held is not None and revision <= held.revision:
        return False
    if record is None:
        known.pop(key, None)
    else:
        known[key] = Versioned(record, revision)
    return True
