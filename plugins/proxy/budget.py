"""A retry budget: retries allowed only while they stay under a share of recent requests.

Without one, ``retries: 2`` triples the load on upstreams exactly when they are failing. Requests and retries
are counted in ``BUCKETS`` slices of the sliding window; a retry is allowed while the retries in the window stay
below ``max(min_retries, ratio * requests)``.
"""

from __future__ import annotations

import time
from collections import deque

from backworks.plugins.proxy.config import RetryBudget as RetryBudgetConfig
from backworks.plugins.proxy.upstreams import Clock

BUCKETS = 10


class RetryBudget:
    """Counts requests and retries over a sliding window (one event loop: no locks)."""

    def __init__(self, config: RetryBudgetConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.slice = config.window_s / BUCKETS
        self._buckets: deque[list[int]] = deque()
        """[slice number, requests, retries], oldest first."""
        self.denied = 0

    def _current(self) -> list[int]:
        now = int(self.clock() / self.slice)
        while self._buckets and self._buckets[0][0] <= now - BUCKETS:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != now:
            self._buckets.append([now, 0, 0])
        return self._buckets[-1]

    def request(self) -> None:
        """Count one request (not a retry)."""
        self._current()[1] += 1

    def spend(self) -> bool:
        """Take one retry from the budget; False when the budget is spent."""
        bucket = self._current()
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        if retries >= max(self.config.min_retries, self.config.ratio * requests):
            self.denied += 1
            return False
        bucket[2] += 1
        return True
