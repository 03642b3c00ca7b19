"""Runs one hook of one plugin on one envelope under its time limit and circuit breaker, and turns the
result into the next state of the envelope. Plugin errors stop here: nothing a hook does raises past
``execute``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import structlog

from backworks.contracts.envelope import Envelope, StageError, Timing
from backworks.contracts.names import Phase
from backworks.pipeline import secrets
from backworks.pipeline.errors import BreakerOpen
from backworks.pipeline.plugin import Category, Continue, Fail, Plugin, Respond

log = structlog.get_logger("backworks.executor")

FailureKind = Literal["error", "timeout", "unavailable", "invalid"]
T = TypeVar("T")


class Breaker(Protocol):
    """What the executor needs from the fleet's circuit breakers (``backworks.pipeline.breakers.FleetBreakers``)."""

    async def call(self, instance: str, fn: Callable[[], Awaitable[T]]) -> T: ...


class HookFailed(Exception):
    """The hook ran and did not succeed (raised, overran, returned ``Fail``): what the breaker counts."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """What happened to the envelope at this stage."""

    envelope: Envelope
    failure: FailureKind | None = None
    message: str = ""
    out_of_memory: bool = False
    """The hook hit the replica's memory limit: the process should be restarted."""


async def run_hook(plugin: Plugin[Any], phase: Phase, envelope: Envelope, timeout: float) -> Continue | Respond:
    """Run the hook under ``timeout``; anything but success raises ``HookFailed`` (or ``MemoryError``)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            action = await plugin.run(phase, envelope)
    except TimeoutError:
        raise HookFailed("timeout", f"hook took longer than {timeout * 1000:.0f} ms") from None
    except (MemoryError, HookFailed):
        raise
    except Exception as exc:
        log.warning("plugin hook raised", plugin=plugin.instance, error=f"{type(exc).__name__}: {exc}")
        raise HookFailed("error", f"{type(exc).__name__}: {exc}") from exc
    elapsed = time.perf_counter() - started
    if elapsed > timeout:
        # A hook that blocked the event loop cannot be interrupted; it still overran its limit.
        raise HookFailed("timeout", f"hook took {elapsed * 1000:.0f} ms, longer than {timeout * 1000:.0f} ms")
    if isinstance(action, Fail):
        raise HookFailed("error", action.reason)
    if isinstance(action, Continue):
        if plugin.category is Category.HANDLER and action.envelope.response is None:
            raise HookFailed("error", "handler returned no response")
        return action
    if isinstance(action, Respond):
        return action
    raise HookFailed("invalid", f"hook returned {type(action).__name__}, expected Continue, Respond or Fail")


async def execute(
    plugin: Plugin[Any],
    phase: Phase,
    raw: bytes,
    envelope: Envelope,
    timeout: float,
    replica: str,
    attempt: int,
    breaker: Breaker | None = None,
) -> Outcome:
    """Run the current stage's hook and advance the envelope; never raises for plugin failures."""
    stage = envelope.itinerary[envelope.cursor]
    started = time.perf_counter()
    failure: FailureKind | None = None
    message = ""
    out_of_memory = False
    try:
        if breaker is None:
            action = await run_hook(plugin, phase, envelope, timeout)
        else:
            action = await breaker.call(stage.instance, lambda: run_hook(plugin, phase, envelope, timeout))
    except HookFailed as exc:
        failure, message = exc.kind, exc.message
    except BreakerOpen as exc:
        failure, message = "unavailable", str(exc)
    except MemoryError:
        failure, message, out_of_memory = "error", "hook exceeded the replica's memory limit", True
    else:
        if isinstance(action, Respond):
            envelope.response = action.response
            if phase is Phase.REQUEST:
                envelope.cursor = envelope.first_response_stage() - 1
        else:
            envelope = action.envelope
    elapsed_ms = (time.perf_counter() - started) * 1000
    if failure:
        message = secrets.mask(message)  # exception texts may quote a plugin's secret config
        # The hook may have changed the envelope before failing: go on from what this stage received.
        envelope = Envelope.from_json(raw)
        critical = stage.critical
        envelope.errors.append(StageError(stage=stage.label, kind=failure, message=message, skipped=not critical))
        if critical:
            envelope.cursor = len(envelope.itinerary)
        else:
            envelope.annotations.setdefault("skipped", []).append({"stage": stage.label, "reason": failure})
            envelope.cursor += 1
    else:
        envelope.cursor += 1
    envelope.timings.append(Timing(stage=stage.label, ms=round(elapsed_ms, 3), replica=replica, attempt=attempt))
    return Outcome(envelope, failure, message, out_of_memory)
