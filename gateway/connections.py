"""The gateway's client connections: how many it holds, which one gives way at the limit, and what it counted.

Past ``max_connections`` an accepted socket would eventually meet ``EMFILE``: the kernel queues new
connections nobody can accept and every client waits, legitimate or not, while nothing is logged. So
the limit sits below the process's open-file limit, and at the limit the connection that gives way is the
oldest one that is idle between requests or has not finished sending its headers (what a flood of idle or
slow sockets is made of). A connection whose request is being served is never closed to make room; when
every connection is busy, the newcomer is refused. Each such event is counted (``EdgeStats``, in the
health report) and logged at most once per ``REPORT_EVERY_S`` (``EdgeReport``), never once per socket.
"""

from __future__ import annotations

import asyncio
import resource
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import structlog

log = structlog.get_logger("backworks.gateway.edge")

DEFAULT_MAX_CONNECTIONS = 10_000
FD_RESERVE = 64
"""Descriptors kept out of the connection budget: the broker connection, the listening socket, logs, the loop."""
REPORT_EVERY_S = 10.0
"""At most one log line per this many seconds about refused, evicted or timed-out connections."""


class EdgeEvent(str, Enum):
    """What the edge did to a client that broke one of its limits."""

    REFUSED = "refused"
    """A new connection was turned away (503): every open connection was busy."""
    EVICTED = "evicted"
    """An idle or unfinished connection was closed to make room for a new one."""
    HEADER_TIMEOUT = "header_timeout"
    """A connection did not finish sending its request line and headers in time (slowloris) and was closed."""
    BODY_TIMEOUT = "body_timeout"
    """A connection did not finish sending its request body in time (a slow-body attack) and was closed."""
    HEADERS_TOO_LARGE = "headers_too_large"
    """A request's headers exceeded the byte or line limit (431)."""
    URI_TOO_LONG = "uri_too_long"
    """A request target exceeded the request-line limit (414)."""
    MALFORMED = "malformed"
    """The HTTP parser rejected the request (400)."""


def descriptor_budget() -> int | None:
    """Connections the process's soft open-file limit leaves room for (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - FD_RESERVE)


def raise_descriptor_limit(wanted: int) -> None:
    """Raise the soft open-file limit towards ``wanted`` + the reserve, as far as the hard limit allows.

    The soft limit is often 1,024 while the hard one is far higher: a server that needs the descriptors takes
    them (as nginx's ``worker_rlimit_nofile`` does) rather than refusing clients at a thousand connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + FD_RESERVE
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def connection_limit(configured: int | None) -> int:
    """``configured`` (default ``DEFAULT_MAX_CONNECTIONS``), lowered to what the open-file limit allows."""
    wanted = DEFAULT_MAX_CONNECTIONS if configured is None else configured
    budget = descriptor_budget()
    if budget is not None and budget < wanted:
        if configured is not None:
            log.warning(
                "gateway.max_connections lowered to what the open-file limit allows",
                configured=configured,
                allowed=budget,
                hint="raise the limit (ulimit -n) to hold more connections",
            )
        return budget
    return wanted


@dataclass
class EdgeStats:
    """What the edge counted since start, for the health report."""

    max_connections: int | None = None
    """None until a server enforces a limit (an app served in-process has no sockets of its own)."""
    open_connections: int = 0
    counts: Counter[EdgeEvent] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        return {
            "open_connections": self.open_connections,
            "max_connections": self.max_connections,
            **{event.value: self.counts[event] for event in EdgeEvent},
        }


class EdgeReport:
    """Counts edge events and logs them rate-limited: the first at once, then one summary per interval."""

    def __init__(self, stats: EdgeStats, every: float = REPORT_EVERY_S) -> None:
        self.stats = stats
        self.every = every
        self._logged: Counter[EdgeEvent] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def count(self, event: EdgeEvent) -> None:
        self.stats.counts[event] += 1
        if self._timer is None:
            self._flush()

    def _flush(self) -> None:
        since = self.stats.counts - self._logged
        if not since:
            self._timer = None  # a quiet interval: the next event is logged at once
            return
        self._logged = self.stats.counts.copy()
        log.warning(
            "clients refused or closed at the edge",
            **{event.value: count for event, count in since.items()},
            open_connections=self.stats.open_connections,
            max_connections=self.stats.max_connections,
            within_s=self.every,
        )
        self._timer = asyncio.get_running_loop().call_later(self.every, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Closable(Protocol):
    """A client connection the guard may close to make room."""

    def evict(self) -> None: ...


class ConnectionGuard:
    """Holds the count of open connections under ``max_connections``, making room by closing idle ones.

    A connection is *resting* from the moment it opens or finishes a response until its next request's headers
    are complete, and *busy* in between. Resting connections are kept in the order they came to rest, so
    making room costs O(1): close the first.
    """

    def __init__(self, max_connections: int, report: EdgeReport) -> None:
        self.max_connections = max_connections
        self.report = report
        self.stats = report.stats
        self.stats.max_connections = max_connections
        self._open: set[Closable] = set()
        self._resting: OrderedDict[Closable, None] = OrderedDict()

    def admit(self, connection: Closable) -> bool:
        """Count a new connection in, closing the oldest resting one at the limit; False: refuse it."""
        if len(self._open) >= self.max_connections:
            if not self._resting:
                self.report.count(EdgeEvent.REFUSED)
                return False
            victim, _ = self._resting.popitem(last=False)
            self._open.discard(victim)
            self.report.count(EdgeEvent.EVICTED)
            victim.evict()
        self._open.add(connection)
        self._resting[connection] = None
        self.stats.open_connections = len(self._open)
        return True

    def busy(self, connection: Closable) -> None:
        """``connection``'s request is being served: never closed to make room."""
        self._resting.pop(connection, None)

    def resting(self, connection: Closable) -> None:
        """``connection`` waits for its next request (or is being turned away): it may give way from now on."""
        if connection in self._open:
            self._resting[connection] = None  # after ``busy``, a new key: the newest to give way

    def release(self, connection: Closable) -> None:
        """``connection`` closed."""
        self._open.discard(connection)
        self._resting.pop(connection, None)
        self.stats.open_connections = len(self._open)
