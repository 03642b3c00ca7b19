"""The proxy's targets as one replica sees them: requests in flight, passive ejection (outlier detection) and
active health, and the choice of the next target (round robin, smooth weighted round robin, least pending).

Passive ejection follows Envoy's outlier detection: ``consecutive_failures`` failures in a row (a 5xx, a refused
connection, a timeout) eject a target for ``base_eject_s * n`` seconds at its n-th ejection (at most
``max_eject_s``); at most ``max_eject_percent`` of the targets are ejected at once, at least one when there are
two or more, and never all of them. Active health checks, when configured, take a target out after failing
checks and bring it back after passing ones; they *can* leave no target available (then: 503).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from backworks.plugins.proxy.config import Balance, PassiveHealth, TargetConfig

log = structlog.get_logger("backworks.plugins.proxy")

Clock = Callable[[], float]


@dataclass(eq=False)  # one object per target: compared by identity, not by its changing counters
class Upstream:
    """One target and what this replica knows about it."""

    url: str
    weight: int
    pending: int = 0
    """Requests in flight to it from this replica."""
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    healthy: bool = True
    """False while active health checks fail."""
    checks_passed: int = 0
    checks_failed: int = 0
    current_weight: int = 0
    """Smooth weighted round robin's running weight."""

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def available(self, now: float) -> bool:
        return self.healthy and not self.ejected(now)

    def why_unavailable(self, now: float) -> str:
        if self.ejected(now):
            return f"{self.url} ejected for {self.ejected_until - now:.1f} s more after failing repeatedly"
        return f"{self.url} failing its health checks"


class Upstreams:
    """The targets of one proxy replica (one event loop: no locks)."""

    def __init__(
        self,
        targets: Sequence[TargetConfig],
        balance: Balance,
        passive: PassiveHealth | None,
        instance: str,
        clock: Clock = time.monotonic,
    ) -> None:
        self.all = [Upstream(target.url, target.weight) for target in targets]
        self.balance = balance
        self.passive = passive
        self.instance = instance
        self.clock = clock
        self._turn = 0

    def choose(self, tried: Sequence[Upstream] = ()) -> Upstream | None:
        """The next target for a try, preferring one not tried yet for this request; ``None`` when none is available."""
        now = self.clock()
        available = [u for u in self.all if u.available(now)]
        candidates = [u for u in available if u not in tried] or available
        if not candidates:
            return None
        if self.balance is Balance.WEIGHTED:
            return self._weighted(candidates)
        start = self._turn % len(candidates)
        self._turn += 1
        rotated = candidates[start:] + candidates[:start]
        if self.balance is Balance.LEAST_PENDING:
            return min(rotated, key=lambda u: u.pending / u.weight)
        return rotated[0]

    @staticmethod
    def _weighted(candidates: list[Upstream]) -> Upstream:
        total = 0
        for upstream in candidates:
            upstream.current_weight += upstream.weight
            total += upstream.weight
        chosen = max(candidates, key=lambda u: u.current_weight)
        chosen.current_weight -= total
        return chosen

    def unavailable(self) -> str:
        """Why no target can take a request, for the 503."""
        now = self.clock()
        return "; ".join(u.why_unavailable(now) for u in self.all)

    def succeeded(self, upstream: Upstream) -> None:
        upstream.consecutive_failures = 0

    def failed(self, upstream: Upstream) -> None:
        """Count a failure; eject the target when it failed ``consecutive_failures`` times in a row (within limits)."""
        upstream.failures += 1
        upstream.consecutive_failures += 1
        passive = self.passive
        if passive is None or upstream.consecutive_failures < passive.consecutive_failures:
            return
        now = self.clock()
        if upstream.ejected(now):
            return
        ejected = sum(1 for u in self.all if u.ejected(now))
        if ejected >= self._max_ejected(passive):
            log.warning("target keeps failing but is not ejected: too many targets are ejected already",
                        instance=self.instance, target=upstream.url, ejected=ejected)  # fmt: skip
            return
        upstream.ejections += 1
        duration = min(passive.base_eject_s * upstream.ejections, passive.max_eject_s)
        upstream.ejected_until = now + duration
        upstream.consecutive_failures = 0
        log.warning("target ejected", instance=self.instance, target=upstream.url, seconds=duration,
                    ejections=upstream.ejections)  # fmt: skip

    def _max_ejected(self, passive: PassiveHealth) -> int:
        count = len(self.all)
        if count < 2 or passive.max_eject_percent == 0:
            return 0
        return min(count - 1, max(1, count * passive.max_eject_percent // 100))

    def checked(self, upstream: Upstream, passed: bool, healthy_after: int, unhealthy_after: int) -> None:
        """Record an active health check; flip the target's health after enough results in a row."""
        if passed:
            upstream.checks_passed += 1
            upstream.checks_failed = 0
            if not upstream.healthy and upstream.checks_passed >= healthy_after:
                upstream.healthy = True
                log.info("target healthy again", instance=self.instance, target=upstream.url)
        else:
            upstream.checks_failed += 1
            upstream.checks_passed = 0
            if upstream.healthy and upstream.checks_failed >= unhealthy_after:
                upstream.healthy = False
                log.warning("target failing health checks", instance=self.instance, target=upstream.url)
