"""Runs one hook of one plugin on one envelope under its time limit, and turns the result into the next
state of the envelope. Plugin errors stop here: nothing a hook does can raise past ``execute``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from contracts.envelope import Envelope, StageError, Timing
from contracts.names import Phase
from pipeline.plugin import Category, Continue, Fail, Plugin, Respond

log = structlog.get_logger("backworks.executor")

FailureKind = Literal["error", "timeout", "unavailable", "invalid"]


@dataclass(frozen=True)
class Outcome:
    """What happened to the envelope at this stage."""

    envelope: Envelope
    failure: FailureKind | None = None
    message: str = ""
    out_of_memory: bool = False
    """The hook hit the replica's memory limit: the process should be restarted."""

    @property
    def finished(self) -> bool:
        """True when the envelope should go back to the gateway now."""
        return self.envelope.cursor >= len(self.envelope.itinerary)


async def call_hook(plugin: Plugin[Any], phase: Phase, envelope: Envelope, timeout: float) -> Continue | Respond | Fail:
    """Run the hook; a raise or an overrun becomes ``Fail`` (with the kind in ``reason``'s prefix)."""
    async with asyncio.timeout(timeout):
        return await plugin.run(phase, envelope)


async def execute(
    plugin: Plugin[Any], phase: Phase, raw: bytes, envelope: Envelope, timeout: float, replica: str, attempt: int
) -> Outcome:
    """Run the current stage's hook and advance the envelope; never raises for plugin failures."""
    stage = envelope.itinerary[envelope.cursor]
    started = time.perf_counter()
    failure: FailureKind | None = None
    message = ""
    out_of_memory = False
    try:
        action = await call_hook(plugin, phase, envelope, timeout)
    except TimeoutError:
        failure, message = "timeout", f"hook took longer than {timeout * 1000:.0f} ms"
    except MemoryError:
        failure, message, out_of_memory = "error", "hook exceeded the replica's memory limit", True
    except Exception as exc:
        failure, message = "error", f"{type(exc).__name__}: {exc}"
        log.warning("plugin hook raised", stage=stage.label, error=message, request_id=envelope.request_id)
    else:
        if isinstance(action, Fail):
            failure, message = "error", action.reason
        elif isinstance(action, Respond):
            envelope.response = action.response
            if phase is Phase.REQUEST:
                envelope.cursor = envelope.first_response_stage() - 1
        elif isinstance(action, Continue):
            envelope = action.envelope
            if stage.phase is Phase.REQUEST and plugin.category is Category.HANDLER and envelope.response is None:
                failure, message = "error", "handler returned no response"
        else:
            failure, message = "error", f"hook returned {type(action).__name__}, expected Continue, Respond or Fail"
    elapsed_ms = (time.perf_counter() - started) * 1000
    if failure is None and elapsed_ms > timeout * 1000:
        # A hook that blocked the event loop cannot be interrupted; it still overran its limit.
        failure, message = "timeout", f"hook took {elapsed_ms:.0f} ms, longer than {timeout * 1000:.0f} ms"
    if failure:
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
