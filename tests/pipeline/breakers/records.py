"""The settings, local views and stored records that the breaker tests build."""

from __future__ import annotations

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.breakers import (
    CountRecord,
    StateRecord,
    StoredState,
)
from backworks.pipeline.breakers.view import FleetView

SETTINGS = BreakerSettings(failure_threshold=5, reset_timeout_ms=2_000, half_open_probes=2)


def view(me: str = "a") -> FleetView:
    return FleetView("auth", SETTINGS, me)


def count(writer: str, failures: int, resets: dict[str, int] | None = None, generation: int = 0) -> CountRecord:
    return CountRecord(generation=generation, writer=writer, failures=failures, resets=resets or {}, at=0.0)


def opened(generation: int = 1, at: float = 100.0) -> StateRecord:
    return StateRecord(state=StoredState.OPEN, generation=generation, opened_at=at, reset_at=at + 2, at=at, by="b")
