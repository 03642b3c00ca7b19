"""The sliding window and the fleet budget, on a controlled clock and in-memory stores (same CAS semantics as KV)."""

from __future__ import annotations

import asyncio
import random

from backworks.contracts.names import RATELIMIT_BUCKET
from backworks.pipeline.stores import MemoryRuntime
from backworks.plugins.rate_limit.budget import FleetBudget
from backworks.plugins.rate_limit.window import SLOTS, SlidingWindow

WINDOW = 60.0
START = 1_000_020.0  # a slot edge of a 60 s window: 1_000_020 / 3 is whole


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def replicas(count: int, limit: int, clock: Clock, runtime: MemoryRuntime | None = None) -> list[FleetBudget]:
    runtime = runtime or MemoryRuntime()
    window = SlidingWindow(limit, WINDOW)
    return [FleetBudget(window, await runtime.kv(RATELIMIT_BUCKET, "limit"), clock) for _ in range(count)]


async def admitted(budget: FleetBudget, count: int, key: str = "caller") -> int:
    return sum([(await budget.admit(key)).allowed for _ in range(count)])


def test_a_unit_counts_for_between_one_window_and_one_window_plus_a_slot() -> None:
    window = SlidingWindow(5, WINDOW)
    slot = window.slot_of(START + 1)
    counts = {slot: 5}
    assert window.available(counts, START + 1) == 0
    assert window.available(counts, START + WINDOW - 0.001) == 0
    assert window.available(counts, START + WINDOW + window.slot_s - 0.001) == 0
    assert window.available(counts, START + WINDOW + window.slot_s) == 5
    assert window.release_of(slot) - (START + 1) <= WINDOW * (1 + 1 / SLOTS)


async def test_no_2n_burst_at_a_window_boundary() -> None:
    clock = Clock(START + WINDOW - 0.1)  # the last 100 ms of a "window"
    [budget] = await replicas(1, 10, clock)
    assert await admitted(budget, 10) == 10
    clock.now = START + WINDOW + 0.1  # a fixed window would start afresh here: 20 in 200 ms
    assert await admitted(budget, 10) == 0
    decision = await budget.admit("caller")
    assert not decision.allowed and decision.remaining == 0
    assert WINDOW - 1 <= decision.retry_after_s <= WINDOW * (1 + 1 / SLOTS)
    clock.now = START + 2 * WINDOW + 0.1 * WINDOW  # past W + one slot after the ten: the budget is back
    assert await admitted(budget, 10) == 10


async def test_no_interval_of_one_window_ever_holds_more_than_the_limit() -> None:
    rng = random.Random(7)
    clock = Clock()
    fleet = await replicas(3, 20, clock)
    times: list[float] = []
    for _ in range(3000):
        clock.now += rng.expovariate(1.0)  # ~1 request/s against 20 per 60 s: mostly rejected
        if (await rng.choice(fleet).admit("caller")).allowed:
            times.append(clock.now)
    assert len(times) > 20 * 3  # it admitted in many windows
    for index, first in enumerate(times):
        inside = [t for t in times[index:] if t < first + WINDOW]
        assert len(inside) <= 20, f"{len(inside)} admitted within {WINDOW} s from {first}"


async def test_rejected_requests_do_not_consume_the_budget() -> None:
    clock = Clock(START + 1)
    [budget] = await replicas(1, 5, clock)
    assert await admitted(budget, 5) == 5
    for step in range(1, 60):  # a client hammering through the whole window
        clock.now = START + 1 + step
        assert await admitted(budget, 10) == 0
    clock.now = START + 1 + WINDOW + WINDOW / SLOTS  # the five units are back, and nothing else was counted
    assert await admitted(budget, 6) == 5


async def test_three_replicas_admit_exactly_the_limit_and_write_per_lease_not_per_request() -> None:
    clock = Clock(START + 1)
    fleet = await replicas(3, 1000, clock)

    async def burst(budget: FleetBudget) -> int:
        results = await asyncio.gather(*(budget.admit("caller") for _ in range(1000)))
        return sum(d.allowed for d in results)

    allowed = sum(await asyncio.gather(*(burst(budget) for budget in fleet)))
    assert allowed == 1000
    writes = sum(b.cas_writes for b in fleet)
    assert writes < 300, f"{writes} compare-and-sets for 3000 requests"


async def test_unused_leases_go_back_after_their_slot_so_other_replicas_can_use_them() -> None:
    clock = Clock(START + 1)
    first, second = await replicas(2, 100, clock)
    await asyncio.gather(*(first.admit("caller") for _ in range(10)))  # ten waiting: a lease of ten or more
    leased = first.keys["caller"].lease_left + 10
    assert leased > 10
    clock.now += WINDOW / SLOTS  # the next slot: the lease ended
    await first.sweep()
    assert first.keys["caller"].lease_left == 0
    assert await admitted(second, 100) == 90, "only the ten used units stay counted"


async def test_callers_have_separate_budgets_and_idle_ones_are_forgotten() -> None:
    clock = Clock(START + 1)
    [budget] = await replicas(1, 2, clock)
    assert await admitted(budget, 3, "a") == 2
    assert await admitted(budget, 3, "b") == 2
    clock.now += WINDOW * 2
    await budget.sweep()
    assert budget.keys == {}


async def test_a_replica_follows_the_fleet_through_the_watch_and_rejects_without_a_round_trip() -> None:
    runtime = MemoryRuntime()
    clock = Clock(START + 1)
    first, second = await replicas(2, 3, clock, runtime)
    second.start()
    try:
        assert await admitted(first, 3) == 3
        await asyncio.sleep(0.05)  # the watch delivers first's write to second
        assert second.keys["caller"].revision == first.keys["caller"].revision
        writes_before = second.cas_writes + second.cas_conflicts
        assert await admitted(second, 5) == 0
        assert second.cas_writes + second.cas_conflicts == writes_before
    finally:
        await second.stop()
