"""One process's picture of one instance's fleet-wide breaker.

Everything here is synchronous and in memory: the KV watch feeds the view (``apply_*``), this process's own
counting changes it at once (``add_failure``/``add_success``), and :mod:`~backworks.pipeline.breakers.mirror`
writes our count record through to NATS KV in the background. See :mod:`backworks.pipeline.breakers` for the
semantics, and :mod:`~backworks.pipeline.breakers.storage` for the aiobreaker storage that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.breakers import (
    BreakerState,
    CountRecord,
    ProbeRecord,
    StateRecord,
    StoredState,
)

R = TypeVar("R", StateRecord, CountRecord, ProbeRecord)
Clock = Callable[[], float]


@dataclass(frozen=True)
class Versioned(Generic[R]):
    """A record and the KV revision it was read from or written at."""

    record: R
    revision: int


def utc(timestamp: float | None) -> datetime | None:
    """An epoch timestamp as an aware UTC datetime (never a naive local one)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


class FleetView:
    """The state, failure counts and probe slots of one instance, as this process knows them."""

    def __init__(self, instance: str, settings: BreakerSettings, me: str) -> None:
        self.instance = instance
        self.settings = settings
        self.me = me
        self.state: Versioned[StateRecord] | None = None
        self.counts: dict[str, Versioned[CountRecord]] = {}
        """Other writers' count records (our own is ``own_*``: authoritative here, ahead of KV)."""
        self.probes: dict[int, Versioned[ProbeRecord]] = {}
        self.own_generation = 0
        self.own_failures = 0
        self.own_resets: dict[str, int] = {}

    # --- reading -------------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.state.record.generation if self.state else 0

    @property
    def opened_at(self) -> float | None:
        return self.state.record.opened_at if self.state and self.state.record.state is StoredState.OPEN else None

    @property
    def reset_at(self) -> float | None:
        return self.state.record.reset_at if self.state and self.state.record.state is StoredState.OPEN else None

    @property
    def reset_timeout(self) -> float:
        return self.settings.reset_timeout_ms / 1000

    def effective(self, now: float) -> BreakerState:
        reset_at = self.reset_at
        if self.state is None or self.state.record.state is StoredState.CLOSED:
            return BreakerState.CLOSED
        if reset_at is not None and now < reset_at:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def failures(self) -> int:
        """Consecutive failures across the fleet in the current generation (see ``backworks.pipeline.breakers``)."""
        totals = self._totals()
        resets = self._resets()
        return sum(max(0, total - resets.get(writer, 0)) for writer, total in totals.items())

    def free_slots(self, now: float, lease: float) -> list[int]:
        """Probe slots nobody holds for this generation (a holder silent for ``lease`` seconds lost it)."""
        return [slot for slot in range(self.settings.half_open_probes) if self.slot_is_free(slot, now, lease)]

    def slot_is_free(self, slot: int, now: float, lease: float) -> bool:
        held = self.probes.get(slot)
        if held is None:
            return True
        return held.record.generation != self.generation or held.record.claimed_at + lease <= now

    def probes_in_flight(self, now: float, lease: float) -> int:
        return self.settings.half_open_probes - len(self.free_slots(now, lease))

    def own_record(self, now: float) -> CountRecord:
        return CountRecord(
            generation=self.own_generation,
            writer=self.me,
            failures=self.own_failures,
            resets=dict(self.own_resets),
            at=now,
        )

    def _current(self) -> list[CountRecord]:
        return [
            versioned.record
            for writer, versioned in self.counts.items()
            if writer != self.me and versioned.record.generation == self.generation
        ]

    def _totals(self) -> dict[str, int]:
        totals = {record.writer: record.failures for record in self._current()}
        totals[self.me] = self.own_failures
        return totals

    def _resets(self) -> dict[str, int]:
        resets = dict(self.own_resets)
        for record in self._current():
            for writer, seen in record.resets.items():
                resets[writer] = max(resets.get(writer, 0), seen)
        return resets

    # --- this process's own counting ----------------------------------------------------------------------

    def add_failure(self) -> None:
        self.own_failures += 1

    def add_success(self) -> bool:
        """Reset the streak for everyone: True when there was one (and our record must be written)."""
        if self.failures() == 0:
            return False
        for writer, total in self._totals().items():
            self.own_resets[writer] = max(self.own_resets.get(writer, 0), total)
        return True

    @property
    def own_dirty(self) -> bool:
        """Our record holds something worth (re)writing after a resync."""
        return self.own_failures > 0 or bool(self.own_resets)

    # --- what the watch (or our own writes) tell us ---------------------------------------------------------

    def apply_state(self, record: StateRecord | None, revision: int) -> bool:
        """Take a newer state (None: the key was deleted, i.e. reset by an operator). True if it changed."""
        if self.state is not None and revision <= self.state.revision:
            return False
        self.state = None if record is None else Versioned(record, revision)
        if self.own_generation != self.generation:
            self.own_generation = self.generation
            self.own_failures = 0
            self.own_resets = {}
        return True

    def apply_count(self, writer: str, record: CountRecord | None, revision: int) -> bool:
        known = self.counts.get(writer)
        if known is not None and revision <= known.revision:
            return False
        if record is None:
            self.counts.pop(writer, None)
        else:
            self.counts[writer] = Versioned(record, revision)
        return True

    def apply_probe(self, slot: int, record: ProbeRecord | None, revision: int) -> bool:
        known = self.probes.get(slot)
        if known is not None and revision <= known.revision:
            return False
        if record is None:
            self.probes.pop(slot, None)
        else:
            self.probes[slot] = Versioned(record, revision)
        return True

    def replace(
        self,
        state: Versioned[StateRecord] | None,
        counts: dict[str, Versioned[CountRecord]],
        probes: dict[int, Versioned[ProbeRecord]],
    ) -> None:
        """Adopt a full snapshot (after a (re)connect: revisions may have restarted if the broker lost the bucket)."""
        self.state, self.counts, self.probes = state, counts, probes
        if self.own_generation != self.generation:
            self.own_generation = self.generation
            self.own_failures = 0
            self.own_resets = {}
