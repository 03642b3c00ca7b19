"""The sliding window: how many requests of the last ``window_s`` seconds count against the limit.

Time is cut into ``SLOTS`` slots of ``window_s / SLOTS`` seconds. A request admitted in slot ``k`` counts until
slot ``k + SLOTS + 1`` begins, i.e. for between ``window_s`` and ``window_s * (1 + 1 / SLOTS)`` seconds. Every
interval of ``window_s`` seconds lies within ``SLOTS + 1`` consecutive slots, and admission keeps the sum of any
``SLOTS + 1`` consecutive slots at most ``limit``: no interval of ``window_s`` seconds (across a "boundary" or
not) ever holds more than ``limit`` admitted requests. There is no 2N burst; the price is that a unit of budget
comes back up to ``1 / SLOTS`` of the window (5 %) late.

Counts are ``{slot index: requests}`` with absolute slot indices (``floor(unix time / slot seconds)``), so
every replica computes the same slots from its own clock (clock skew between hosts shifts slot edges by the
skew, milliseconds against slots of ``window_s / 20``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

SLOTS = 20
"""Slots per window: a unit of budget is held for at most 1/20 (5 %) longer than the window."""

Counts = dict[int, int]


@dataclass(frozen=True)
class SlidingWindow:
    """``limit`` requests per ``window_s`` seconds, counted in slots."""

    limit: int
    window_s: float
    slots: int = SLOTS

    @property
    def slot_s(self) -> float:
        return self.window_s / self.slots

    def slot_of(self, now: float) -> int:
        return math.floor(now / self.slot_s)

    def oldest_counted(self, now: float) -> int:
        """The first slot that still counts at ``now`` (the current one and the ``slots`` before it count)."""
        return self.slot_of(now) - self.slots

    def live(self, counts: Mapping[int, int], now: float) -> Counts:
        """``counts`` without the slots that no longer count (and without empty ones)."""
        first = self.oldest_counted(now)
        return {slot: n for slot, n in counts.items() if slot >= first and n > 0}

    def used(self, counts: Mapping[int, int], now: float) -> int:
        first = self.oldest_counted(now)
        return sum(n for slot, n in counts.items() if slot >= first)

    def available(self, counts: Mapping[int, int], now: float) -> int:
        return max(0, self.limit - self.used(counts, now))

    def release_of(self, slot: int) -> float:
        """Unix time at which requests counted in ``slot`` stop counting."""
        return (slot + self.slots + 1) * self.slot_s

    def next_release(self, counts: Mapping[int, int], now: float) -> float:
        """Seconds until some budget comes back (the oldest counted slot leaves); 0 when nothing is counted."""
        live = self.live(counts, now)
        return max(0.0, self.release_of(min(live)) - now) if live else 0.0

    def full_release(self, counts: Mapping[int, int], now: float) -> float:
        """Seconds until the whole budget is back (the newest counted slot leaves); 0 when nothing is counted."""
        live = self.live(counts, now)
        return max(0.0, self.release_of(max(live)) - now) if live else 0.0


def whole_seconds(seconds: float, minimum: int = 0) -> int:
    """Seconds for a header: rounded up, so a client that waits that long finds the budget back."""
    return max(minimum, math.ceil(seconds - 1e-9))
