"""Settings, records, plugin calls and listeners that the breaker tests build."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from backworks.contracts.blueprint import BreakerSettings, SlidingWindow, WindowType
from backworks.contracts.breakers import BreakerState, StateRecord, StoredState, WindowRecord
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.breakers.view import FleetView

INSTANCE = "auth"


def rule(
    size: int = 10,
    minimum: int | None = None,
    rate: float = 50,
    window: WindowType = WindowType.COUNT,
    wait_ms: int = 10_000,
    probes: int = 1,
    slow_ms: int = 60_000,
    slow_rate: float = 100,
) -> BreakerSettings:
    return BreakerSettings(
        sliding_window=SlidingWindow(type=window, size=size),
        minimum_calls=size if minimum is None else minimum,
        failure_rate=rate,
        slow_call_duration_ms=slow_ms,
        slow_call_rate=slow_rate,
        wait_in_open_ms=wait_ms,
        permitted_calls_in_half_open=probes,
    )


def settings(**kwargs: Any) -> dict[str, BreakerSettings]:
    """``INSTANCE`` with ``rule(**kwargs)``, and an ``other`` instance with the defaults."""
    return {INSTANCE: rule(**kwargs), "other": BreakerSettings()}


def view(me: str = "a", **kwargs: Any) -> FleetView:
    return FleetView(INSTANCE, rule(**kwargs), me)


def window(writer: str, *tallies: tuple[float, int, int, int], generation: int = 0) -> WindowRecord:
    return WindowRecord(generation=generation, writer=writer, tallies=list(tallies), at=0.0)


def opened(generation: int = 1, at: float = 100.0) -> StateRecord:
    return StateRecord(state=StoredState.OPEN, generation=generation, opened_at=at, reset_at=at + 2, at=at, by="b")


async def fail(error: BaseException) -> None:
    await asyncio.sleep(0)
    raise error


async def ok() -> str:
    return "ok"


async def record(fleet: FleetBreakers, failures: int = 0, successes: int = 0) -> None:
    """Outcomes of calls made outside ``call`` (instant ones), failures first."""
    for index in range(failures):
        await fleet.record(INSTANCE, 0.0, RuntimeError(f"failure {index}"))
    for _ in range(successes):
        await fleet.record(INSTANCE, 0.0)


class Gate:
    """A plugin call that runs until released: counts how many run at once; ``errors`` are raised in turn."""

    def __init__(self, *errors: BaseException | None) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.errors = list(errors)

    async def __call__(self) -> str:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            error = self.errors.pop(0) if self.errors else None
            if error is not None:
                raise error
            return "ok"
        finally:
            self.running -= 1


class StateChanges:
    """A breaker listener: records (perf_counter, instance, new state) for every change a FleetBreakers notices."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, BreakerState]] = []
        self.changed = asyncio.Event()

    def __call__(self, instance: str, old: BreakerState, new: BreakerState) -> None:
        self.seen.append((time.perf_counter(), instance, new))
        self.changed.set()

    async def wait_for(self, state: BreakerState, timeout: float = 5.0) -> float:
        async with asyncio.timeout(timeout):
            while True:
                for at, _, seen in self.seen:
                    if seen is state:
                        return at
                self.changed.clear()
                await self.changed.wait()
