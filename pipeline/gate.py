"""Whether a stage can be sent work now, and moving an envelope past the stages that cannot.

Forwarders (the gateway and every stage host) use this before they publish: a stage with no live
replica or an open circuit breaker is never sent a message. A non-critical one is skipped and noted
on the envelope; a critical one ends the request with an ``unavailable`` error (503).
"""

from __future__ import annotations

from typing import Protocol

from backworks.contracts.envelope import Envelope, Stage, StageError
from backworks.contracts.types import FailureKind
from backworks.pipeline.liveness import LivenessView


class BreakerView(Protocol):
    """What the gate needs from the fleet's circuit breakers."""

    def allow(self, instance: str) -> bool: ...


class StageGate:
    """Combines liveness (heartbeats) and circuit breakers into one yes/no per stage."""

    def __init__(self, liveness: LivenessView | None = None, breakers: BreakerView | None = None) -> None:
        self.liveness = liveness
        self.breakers = breakers

    def unavailable(self, stage: Stage) -> str | None:
        """Why ``stage`` cannot take work now, or None when it can."""
        liveness = self.liveness
        if liveness is not None and liveness.absent(stage.instance):
            return "no live replica"
        if self.breakers is not None and not self.breakers.allow(stage.instance):
            return "circuit breaker open"
        return None

    def blocked_critical(self, itinerary: list[Stage]) -> tuple[Stage, str] | None:
        """The first critical stage of ``itinerary`` that cannot take work, and why: the request cannot succeed."""
        for stage in itinerary:
            if stage.critical and (reason := self.unavailable(stage)):
                return stage, reason
        return None

    def advance(self, envelope: Envelope) -> tuple[Stage | None, list[StageError]]:
        """Move the cursor past unavailable stages. Returns the stage to send to (None: finished) and the
        errors recorded on the way (for the event stream)."""
        recorded: list[StageError] = []
        while (stage := envelope.current) is not None:
            reason = self.unavailable(stage)
            if reason is None:
                return stage, recorded
            # An optional stage is skipped; a critical one moves the cursor to the end: the loop stops.
            recorded.append(envelope.fail_stage(FailureKind.UNAVAILABLE, reason))
        return None, recorded
