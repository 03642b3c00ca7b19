"""The blueprint's alert rules, evaluated by the analytics service; each change of state is an alert event and
a log line.

Rate and latency rules read the service's aggregates; ``no_live_replica`` reads the replica registry (the
liveness view every service keeps); ``dlq_growing`` compares the dead-letter stream's size now with its size a
window ago.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from pydantic import BaseModel

from backworks.contracts.blueprint import AlertRule
from backworks.contracts.events import AlertEvent, AlertState
from backworks.contracts.names import alert_subject
from backworks.tap.aggregates import Aggregates, Dimension, Tally

log = structlog.get_logger("backworks.alerts")

ALL = "*"


class Emits(Protocol):
    """Where alert events go: the service's ``EventPublisher``."""

    def emit(self, subject: str, event: BaseModel) -> None: ...


@dataclass(frozen=True)
class Finding:
    """One rule's condition, measured: whether it holds, what was seen, about what."""

    holds: bool
    value: float | None
    subject: str


def describe(rule: AlertRule) -> str:
    where = rule.route or "any endpoint"
    if rule.error_rate_above is not None:
        return f"5xx rate of {where} above {rule.error_rate_above:g} % over {rule.window_s:g} s"
    if rule.p99_above_ms is not None:
        return f"p99 latency of {where} above {rule.p99_above_ms:g} ms over {rule.window_s:g} s"
    if rule.no_live_replica:
        return f"{rule.instance or 'a plugin instance'} has no live replica"
    return f"dead letters added over {rule.window_s:g} s"


class AlertRules:
    """Evaluates every rule and emits the changes of state."""

    def __init__(
        self,
        rules: list[AlertRule],
        aggregates: Aggregates,
        events: Emits,
        live: Callable[[str], bool],
        instances: list[str],
    ) -> None:
        self.rules = rules
        self.aggregates = aggregates
        self.events = events
        self.live = live
        """Whether an instance has a live replica (False only once the view has watched long enough to know)."""
        self.instances = instances
        self.firing: dict[str, Finding] = {}
        self.dlq_sizes: deque[tuple[float, int]] = deque()

    def note_dlq_size(self, size: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.dlq_sizes.append((now, size))
        longest = max((r.window_s for r in self.rules if r.dlq_growing), default=0.0)
        while len(self.dlq_sizes) > 1 and self.dlq_sizes[1][0] <= now - longest:
            self.dlq_sizes.popleft()

    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """Measure every rule; emit and return an event for each that started or stopped firing."""
        now = time.time() if now is None else now
        changed = []
        for rule in self.rules:
            finding = self.measure(rule, now)
            was = rule.name in self.firing
            if finding.holds == was:
                if finding.holds:
                    self.firing[rule.name] = finding
                continue
            state = AlertState.FIRING if finding.holds else AlertState.RESOLVED
            if finding.holds:
                self.firing[rule.name] = finding
            else:
                del self.firing[rule.name]
            event = AlertEvent(rule=rule.name, state=state, condition=describe(rule), value=finding.value,
                               subject=finding.subject)  # fmt: skip
            self.events.emit(alert_subject(state.value), event)
            log.warning("alert", rule=rule.name, state=state.value, condition=event.condition, value=finding.value,
                        subject=finding.subject)  # fmt: skip
            changed.append(event)
        return changed

    def measure(self, rule: AlertRule, now: float) -> Finding:
        if rule.no_live_replica:
            watched = [rule.instance] if rule.instance else self.instances
            down = [name for name in watched if not self.live(name)]
            return Finding(bool(down), float(len(down)), ",".join(down))
        if rule.dlq_growing:
            if not self.dlq_sizes:
                return Finding(False, None, "BW_DLQ")
            gained = self.dlq_sizes[-1][1] - self.dlq_sizes[0][1]
            return Finding(gained > 0, float(gained), "BW_DLQ")
        tallies = self.aggregates.window(rule.window_s, now)[Dimension.ENDPOINT]
        if rule.route is not None:
            tally = tallies.get(rule.route, Tally())
        else:
            tally = Tally()
            for each in tallies.values():
                tally.merge(each)
        subject = rule.route or ALL
        if tally.count < rule.min_requests:
            return Finding(False, None, subject)
        if rule.error_rate_above is not None:
            rate = 100 * tally.errors / tally.count
            return Finding(rate > rule.error_rate_above, round(rate, 2), subject)
        p99 = tally.p(99.0)
        bound = rule.p99_above_ms or 0.0
        return Finding(p99 is not None and p99 > bound, p99, subject)
