"""aiobreaker's storage and listener interfaces over a :class:`~backworks.pipeline.breakers.view.FleetView`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from aiobreaker import CircuitBreakerListener, CircuitBreakerState  # type: ignore[import-untyped]  # no type hints
from aiobreaker.storage.base import CircuitBreakerStorage  # type: ignore[import-untyped]  # same

from backworks.contracts.breakers import BreakerState
from backworks.pipeline.breakers.view import Clock, FleetView, utc

log = structlog.get_logger("backworks.breakers")

_REFUSED = "fleet breakers change state only through FleetBreakers (a CAS write the whole fleet agrees on)"

_AIOBREAKER_STATES = {
    BreakerState.CLOSED: CircuitBreakerState.CLOSED,
    BreakerState.OPEN: CircuitBreakerState.OPEN,
    BreakerState.HALF_OPEN: CircuitBreakerState.HALF_OPEN,
}

_FROM_AIOBREAKER = {theirs: ours for ours, theirs in _AIOBREAKER_STATES.items()}


class FleetStorage(CircuitBreakerStorage):  # type: ignore[misc]  # its base class is untyped (aiobreaker)
    """aiobreaker's synchronous storage interface over a :class:`FleetView`.

    Reads come from the local view. Transitions are refused here: they must go through the CAS write in
    ``FleetBreakers`` so that the fleet agrees on their order (aiobreaker's ``open()`` would also stamp a naive
    ``utcnow()``). ``reset_counter`` is a no-op: aiobreaker calls it when it notices a close, and a close already
    starts a new generation with every count at zero.
    """

    def __init__(self, view: FleetView, clock: Clock, on_failure: Callable[[], None]) -> None:
        super().__init__(view.instance)
        self._view = view
        self._clock = clock
        self._on_failure = on_failure

    @property
    def state(self) -> object:
        return _AIOBREAKER_STATES[self._view.effective(self._clock())]

    @state.setter
    def state(self, state: object) -> None:
        raise NotImplementedError(_REFUSED)

    def increment_counter(self) -> None:
        self._view.add_failure()
        self._on_failure()

    def reset_counter(self) -> None:
        return None

    @property
    def counter(self) -> int:
        return self._view.failures()

    @property
    def opened_at(self) -> datetime | None:
        return utc(self._view.opened_at)

    @opened_at.setter
    def opened_at(self, date_time: datetime) -> None:
        raise NotImplementedError(_REFUSED)


class LogListener(CircuitBreakerListener):  # type: ignore[misc]  # its base class is untyped (aiobreaker)
    """Logs each state change a process notices (aiobreaker calls it from ``CircuitBreaker.state``)."""

    def __init__(self, replica: str) -> None:
        self.replica = replica

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        old_name, new_name = state_name(old), state_name(new)
        log.info("breaker state changed", instance=breaker.name, old=old_name, new=new_name, replica=self.replica)


def state_name(state: Any) -> str:
    """Our name for one of aiobreaker's state objects."""
    return _FROM_AIOBREAKER[state.state].value if state is not None else "unknown"
