"""aiobreaker's storage interface over the local view: reads come from it, transitions are refused."""

from __future__ import annotations

from datetime import UTC

import pytest
from aiobreaker import CircuitBreaker, CircuitBreakerState  # type: ignore[import-untyped]  # no type hints

from backworks.pipeline.breakers.storage import FleetStorage
from tests.pipeline.breakers.records import SETTINGS, opened, view


def test_the_aiobreaker_storage_reads_the_view_and_refuses_transitions() -> None:
    local = view()
    written: list[str] = []
    storage = FleetStorage(local, clock=lambda: 101.0, on_failure=lambda: written.append("count"))
    breaker = CircuitBreaker(fail_max=SETTINGS.failure_threshold, state_storage=storage, name="auth")
    storage.increment_counter()
    assert breaker.fail_counter == 1 and written == ["count"]
    local.apply_state(opened(at=100.0), revision=1)
    assert breaker.current_state is CircuitBreakerState.OPEN
    assert storage.opened_at is not None and storage.opened_at.tzinfo is UTC
    assert storage.opened_at.timestamp() == 100.0
    with pytest.raises(NotImplementedError, match="CAS"):
        breaker.close()
