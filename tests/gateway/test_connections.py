"""The connection guard: who gives way at the limit, what is refused, and how it is counted and logged."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from structlog.testing import capture_logs

from backworks.gateway import connections
from backworks.gateway.connections import ConnectionGuard, EdgeEvent, EdgeReport, EdgeStats, connection_limit


class Socket:
    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def guard(limit: int) -> ConnectionGuard:
    return ConnectionGuard(limit, EdgeReport(EdgeStats()))


async def test_at_the_limit_the_oldest_resting_connection_gives_way_and_busy_ones_never_do() -> None:
    edge = guard(3)
    a, b, c, d, e = (Socket(n) for n in "abcde")
    for sock in (a, b, c):
        assert edge.admit(sock)
    edge.busy(a)  # a's request is being served
    assert edge.admit(d)
    assert (a.evicted, b.evicted) == (False, True), "b was the oldest resting connection"
    edge.resting(a)  # a finished its response: now the newest to rest
    assert edge.admit(e)
    assert c.evicted and not a.evicted
    assert edge.stats.counts[EdgeEvent.EVICTED] == 2
    assert edge.stats.open_connections == 3


async def test_when_every_connection_is_busy_a_new_one_is_refused_and_a_closed_one_makes_room() -> None:
    edge = guard(2)
    a, b, c = Socket("a"), Socket("b"), Socket("c")
    for sock in (a, b):
        edge.admit(sock)
        edge.busy(sock)
    assert not edge.admit(c)
    assert edge.stats.counts[EdgeEvent.REFUSED] == 1 and not a.evicted and not b.evicted
    edge.release(a)
    assert edge.admit(c)
    assert edge.stats.report()["open_connections"] == 2


async def test_events_are_logged_at_once_then_at_most_once_per_interval() -> None:
    stats = EdgeStats(max_connections=10)
    report = EdgeReport(stats, every=60.0)
    with capture_logs() as logs:
        for _ in range(500):
            report.count(EdgeEvent.EVICTED)
        report.count(EdgeEvent.REFUSED)
    report.close()
    assert len(logs) == 1, "one line for the first event; the rest waits for the interval's summary"
    assert logs[0]["evicted"] == 1 and logs[0]["log_level"] == "warning"
    assert stats.counts[EdgeEvent.EVICTED] == 500 and stats.counts[EdgeEvent.REFUSED] == 1


async def test_the_interval_summary_holds_what_came_after_the_first_line() -> None:
    report = EdgeReport(EdgeStats(), every=0.05)
    with capture_logs() as logs:
        report.count(EdgeEvent.HEADER_TIMEOUT)
        for _ in range(9):
            report.count(EdgeEvent.HEADER_TIMEOUT)
        report._flush()  # what the interval's timer calls
    report.close()
    assert [line["header_timeout"] for line in logs] == [1, 9]


def test_the_connection_limit_stays_below_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    assert connection_limit(None) == 1024 - connections.FD_RESERVE
    assert connection_limit(100) == 100
    assert connection_limit(50_000) == 1024 - connections.FD_RESERVE
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1_000_000, 1_000_000))
    assert connection_limit(None) == connections.DEFAULT_MAX_CONNECTIONS


RAISE_LIMIT = """
import resource
from backworks.gateway.connections import FD_RESERVE, raise_descriptor_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))
raise_descriptor_limit(1000)
assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1000 + FD_RESERVE, 4096)
raise_descriptor_limit(10_000)
assert resource.getrlimit(resource.RLIMIT_NOFILE) == (4096, 4096), "never above the hard limit"
"""


def test_the_soft_open_file_limit_is_raised_towards_what_the_connections_need() -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096:
        pytest.skip("the hard open-file limit here is below 4096")
    result = subprocess.run([sys.executable, "-c", RAISE_LIMIT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
