"""The fleet-wide budget: every replica leases chunks of one sliding window from NATS KV.

Per limited caller there is one KV key holding the window's slot counts (``window.SlidingWindow``). A replica
never admits a request it has not leased: it takes a *lease* -- a chunk of the budget, counted in the current
slot with one compare-and-set (CAS) on the key -- and then admits requests from that chunk locally, without a
round trip. So the fleet admits at most what the key counts, and the key never counts more than ``limit`` in any
window: the limit holds exactly (N, not N + x %), whatever the number of replicas or gateways.

What keeps it from under-admitting or hammering one key:

- chunks follow demand: a lease covers the requests waiting for it on that replica (one CAS serves them all),
  and beyond that doubles while they keep coming (slow start) up to ``1 / LEASE_SHARE`` of what is left, so
  the last units are spread in small chunks and few are left stranded on a replica that stopped seeing traffic;
- a lease is valid until the end of its slot; its unused units go back to the key (counted out of their slot)
  with that replica's next CAS on the key, or by the sweeper right after the slot ends;
- every replica follows the keys through one KV watch (~0.4 ms behind a write): it knows the current revision,
  so a lease is usually one round trip, and it rejects from what it knows, with no round trip;
- a CAS that loses re-reads the key and tries again (``MAX_CAS_ATTEMPTS``).

CAS traffic is per lease, not per request: a burst of N requests costs O(replicas + LEASE_SHARE x log N) CAS.
Rejected requests never touch the key, so they consume nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from backworks.pipeline.errors import StoreConflict, StoreUnavailable
from backworks.pipeline.stores import Entry, KeyValueStore
from backworks.plugins.rate_limit.window import Counts, SlidingWindow

log = structlog.get_logger("backworks.plugins.rate_limit")

LEASE_SHARE = 8
"""A lease takes at most 1/8 of the budget left (at least one unit)."""
MAX_CAS_ATTEMPTS = 10
WATCH_RETRY_S = 0.5
SWEEP_OFFSET_S = 0.005
"""The sweeper runs this long after a slot ends, so clocks a few ms apart agree the slot is over."""
VALUE_VERSION = 1


@dataclass(frozen=True)
class Decision:
    """Whether a request may pass, and what the ``RateLimit-*`` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    """Seconds until the whole budget is back."""
    retry_after_s: float
    """Seconds until some budget is back (what a rejected client should wait)."""


class KeyBudget:
    """What one replica knows of one limited caller: the key's counts and revision, and its own lease."""

    __slots__ = ("counts", "grant", "lease_left", "lease_slot", "pending", "revision", "waiters")

    def __init__(self) -> None:
        self.counts: Counts = {}
        self.revision = 0
        """Revision of the key that ``counts`` reflects (0: no value)."""
        self.lease_slot = -1
        self.lease_left = 0
        self.grant = 0
        """Size of the last lease (slow start doubles it while it gets used up)."""
        self.pending: asyncio.Future[None] | None = None
        """Set while this replica writes the key: other requests for it wait instead of writing too."""
        self.waiters = 0


def encode(window: SlidingWindow, counts: Counts) -> bytes:
    payload = {"v": VALUE_VERSION, "slot_ms": round(window.slot_s * 1000), "counts": sorted(counts.items())}
    return json.dumps(payload, separators=(",", ":")).encode()


def decode(window: SlidingWindow, value: bytes) -> Counts:
    """The slot counts in ``value``; none when it was written with another window (the config changed)."""
    try:
        payload = json.loads(value)
        if payload.get("slot_ms") != round(window.slot_s * 1000):
            return {}
        return {int(slot): int(n) for slot, n in payload["counts"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("unreadable rate-limit state ignored", value=value[:200])
        return {}


class FleetBudget:
    """One plugin replica's side of the fleet-wide budget of every caller it limits."""

    def __init__(self, window: SlidingWindow, store: KeyValueStore, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.store = store
        self.clock = clock
        self.keys: dict[str, KeyBudget] = {}
        self.cas_writes = 0
        self.cas_conflicts = 0
        self.leases = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.closing = False

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Follow the keys (watch) and return stale leases (sweeper): two tasks per replica, none per request."""
        self.tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        # What this replica leased and did not use goes back, so the fleet does not lose it to a shutdown.
        self.closing = True  # every lease ends now: the writes below give back what is left of them
        for key, budget in list(self.keys.items()):
            if budget.lease_left > 0:
                with contextlib.suppress(StoreUnavailable, StoreConflict):
                    await self._exclusive(key, budget, want=0)

    # -------------------------------------------------------------------------------------------------- admission

    async def admit(self, key: str) -> Decision:
        """Admit one request of caller ``key`` (a store key) or not. Raises ``StoreUnavailable`` when it cannot tell."""
        budget = self.keys.get(key)
        if budget is None:
            budget = self.keys[key] = KeyBudget()
        while True:
            now = self.clock()
            slot = self.window.slot_of(now)
            if budget.lease_slot == slot and budget.lease_left > 0:
                budget.lease_left -= 1
                return self._decision(budget, True, now)
            if budget.pending is not None:
                budget.waiters += 1
                try:
                    await asyncio.shield(budget.pending)
                finally:
                    budget.waiters -= 1
                continue
            if self.window.available(budget.counts, now) == 0 and not self._stale_lease(budget, slot):
                return self._decision(budget, False, now)  # known to be spent: no round trip
            granted = await self._exclusive(key, budget, want=self._want(budget, slot))
            if granted == 0:
                return self._decision(budget, False, self.clock())

    def _want(self, budget: KeyBudget, slot: int) -> int:
        """Units to ask for: what is waiting here, or twice the last lease if that one was used up in this slot."""
        slow_start = 2 * budget.grant if budget.lease_slot == slot and budget.lease_left == 0 else 1
        return max(budget.waiters + 1, slow_start)

    def _stale_lease(self, budget: KeyBudget, slot: int) -> bool:
        """The lease has units left that can no longer be used: its slot ended (or this replica is stopping)."""
        return budget.lease_left > 0 and (budget.lease_slot != slot or self.closing)

    def _decision(self, budget: KeyBudget, allowed: bool, now: float) -> Decision:
        window = self.window
        remaining = window.limit - window.used(budget.counts, now)
        if budget.lease_slot == window.slot_of(now):
            remaining += budget.lease_left  # leased units not used yet are still ours to give
        return Decision(
            allowed=allowed,
            limit=window.limit,
            remaining=max(0, remaining) if allowed else 0,
            reset_s=window.full_release(budget.counts, now),
            retry_after_s=window.next_release(budget.counts, now),
        )

    # ------------------------------------------------------------------------------------------------------ leases

    async def _exclusive(self, key: str, budget: KeyBudget, want: int) -> int:
        """Write the key with no other writer of this replica on it; returns the units leased."""
        while budget.pending is not None:
            await asyncio.shield(budget.pending)
        budget.pending = asyncio.get_running_loop().create_future()
        try:
            return await self._lease(key, budget, want)
        finally:
            done, budget.pending = budget.pending, None
            done.set_result(None)

    async def _lease(self, key: str, budget: KeyBudget, want: int) -> int:
        """One CAS: give back a stale lease's unused units and take up to ``want`` new ones (``want=0``: give back)."""
        window = self.window
        for _ in range(MAX_CAS_ATTEMPTS):
            now = self.clock()
            slot = window.slot_of(now)
            counts = window.live(budget.counts, now)
            returned = 0
            if self._stale_lease(budget, slot) and budget.lease_slot in counts:
                returned = min(budget.lease_left, counts[budget.lease_slot])
                counts[budget.lease_slot] -= returned
            available = window.limit - window.used(counts, now)
            chunk = 0
            if want > 0 and available > 0:
                chunk = min(available, max(budget.waiters + 1, min(want, max(1, available // LEASE_SHARE))))
            if chunk == 0 and returned == 0:
                if self._stale_lease(budget, slot):
                    budget.lease_left = 0  # its slot no longer counts: nothing to give back
                return 0
            if chunk:
                counts[slot] = counts.get(slot, 0) + chunk
            try:
                revision = await self.store.update(key, encode(window, counts), last=budget.revision)
            except StoreConflict:
                self.cas_conflicts += 1
                self.apply(key, await self.store.get(key), budget)
                continue
            self.cas_writes += 1
            if revision > budget.revision:  # the watch may already have brought a later write of another replica
                budget.counts, budget.revision = window.live(counts, now), revision
            if chunk:
                self.leases += 1
                budget.lease_slot, budget.lease_left, budget.grant = slot, chunk, chunk
            elif self._stale_lease(budget, slot):
                budget.lease_left = 0
            return chunk
        raise StoreUnavailable(f"rate-limit key {key} kept changing: {MAX_CAS_ATTEMPTS} compare-and-set attempts lost")

    # --------------------------------------------------------------------------------------- following the fleet

    def apply(self, key: str, entry: Entry | None, budget: KeyBudget | None = None) -> None:
        """Take in the key's value as read or watched, if it is newer than what this replica knows."""
        if budget is None:
            budget = self.keys.get(key)
            if budget is None:
                budget = self.keys[key] = KeyBudget()
        if entry is None or entry.deleted:
            if entry is None or entry.revision > budget.revision:
                budget.counts, budget.revision = {}, 0
            return
        if entry.revision > budget.revision:
            budget.counts, budget.revision = decode(self.window, entry.value), entry.revision

    async def _follow(self) -> None:
        while True:
            try:
                watch = await self.store.watch()
                try:
                    async for entry in watch:
                        self.apply(entry.key, entry)
                finally:
                    await watch.stop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rate-limit watch interrupted; resuming", error=repr(exc))
            await asyncio.sleep(WATCH_RETRY_S)

    async def _sweep(self) -> None:
        while True:
            now = self.clock()
            next_slot = (self.window.slot_of(now) + 1) * self.window.slot_s
            await asyncio.sleep(max(0.0, next_slot - now) + SWEEP_OFFSET_S)
            await self.sweep()

    async def sweep(self) -> None:
        """Give back the unused units of leases whose slot ended; forget callers with nothing counted (each slot)."""
        now = self.clock()
        slot = self.window.slot_of(now)
        for key, budget in list(self.keys.items()):
            if budget.pending is not None:
                continue
            if self._stale_lease(budget, slot):
                try:
                    await self._exclusive(key, budget, want=0)
                except (StoreUnavailable, StoreConflict) as exc:
                    log.warning("unused rate-limit lease not given back", error=str(exc))
            elif not budget.lease_left and not self.window.live(budget.counts, now):
                del self.keys[key]
