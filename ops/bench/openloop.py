"""Open-loop load: requests sent at a fixed arrival rate, latency measured from when each was due.

A closed loop (``loadgen.run``) sends a request only when the previous one on its connection returned, so a slow
response also delays the requests behind it and their wait is never measured (coordinated omission). Here request
``i`` is due at ``start + i / rate`` whatever happened before; it goes out on a free keep-alive connection of the
pool or, when every connection is busy, waits in a backlog. Its latency runs from its due time to its response,
so time spent in the backlog counts as the server's (it is: the server did not keep up). Latencies go into an
HdrHistogram (1 µs resolution, 3 significant digits).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from hdrh.histogram import HdrHistogram

CONNECT_TIMEOUT = 5.0
DRAIN_TIMEOUT = 10.0
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"
LOWEST_US = 1
HIGHEST_US = 120_000_000
"""Latencies beyond two minutes are clamped to it (a request that late failed the bound long before)."""
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


@dataclass
class OpenJob:
    """Send ``rate`` requests per second for ``warmup`` + ``duration`` seconds over at most ``connections``."""

    host: str
    port: int
    path: str
    rate: float
    duration: float
    connections: int = 64
    warmup: float = 0.0


@dataclass
class Tally:
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    window: tuple[int, int] = (0, 0)
    """Due times (ns) of the measured requests: [start, end)."""
    due_in_window: int = 0
    outstanding: int = 0
    completed: int = 0
    max_backlog: int = 0
    dropped: int = 0
    """Due requests never sent: every connection was lost."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``pool`` hands it the next due request when it is free."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.buffer = b""
        self.due = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, due: int) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(self.pool.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(CONTENT_LENGTH)
        if at < 0:
            self.pool.fail(self, "response without content-length")
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + len(CONTENT_LENGTH) : line_end if line_end > 0 else len(head)])
        total = end + len(HEADER_END) + length
        if len(self.buffer) < total:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[total:]
        self.pool.done(self, status, time.perf_counter_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)


class Pool:
    """The connections, the free ones, and the backlog of due requests waiting for one."""

    def __init__(self, request: bytes, tally: Tally) -> None:
        self.request = request
        self.tally = tally
        self.free: list[Connection] = []
        self.busy: set[Connection] = set()
        self.backlog: deque[int] = deque()
        self.alive = 0
        self.drained = asyncio.Event()
        self.stopping = False

    def dispatch(self, due: int) -> None:
        tally = self.tally
        if tally.window[0] <= due < tally.window[1]:
            tally.due_in_window += 1
        if not self.alive:
            tally.dropped += 1
            return
        tally.outstanding += 1
        if self.free:
            connection = self.free.pop()
            self.busy.add(connection)
            connection.send(due)
        else:
            self.backlog.append(due)
            tally.max_backlog = max(tally.max_backlog, len(self.backlog))

    def done(self, connection: Connection, status: int, finished: int) -> None:
        tally = self.tally
        tally.outstanding -= 1
        tally.completed += 1
        if tally.window[0] <= connection.due < tally.window[1]:
            tally.histogram.record_value(min(HIGHEST_US, max(LOWEST_US, (finished - connection.due) // 1000)))
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        self._next(connection)

    def fail(self, connection: Connection, reason: str) -> None:
        self.tally.errors.append(reason)
        self.tally.outstanding -= 1
        self.busy.discard(connection)
        if connection.transport is not None:
            connection.transport.close()
        self._check_drained()

    def lost(self, connection: Connection, exc: Exception | None) -> None:
        if not self.stopping:
            self.tally.errors.append(f"connection lost: {exc!r}")
        if connection in self.busy:
            self.busy.discard(connection)
            self.tally.outstanding -= 1
        with contextlib.suppress(ValueError):
            self.free.remove(connection)
        self.alive -= 1
        if not self.alive:  # nothing will ever send what waits: it failed
            self.tally.dropped += len(self.backlog)
            self.tally.outstanding -= len(self.backlog)
            self.backlog.clear()
        self._check_drained()

    def _next(self, connection: Connection) -> None:
        if self.backlog:
            connection.send(self.backlog.popleft())
            return
        self.busy.discard(connection)
        self.free.append(connection)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.stopping and self.tally.outstanding <= 0:
            self.drained.set()


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float]:
    """p50 … p99.9, mean and max of ``histogram`` (µs values) in milliseconds."""
    if histogram.get_total_count() == 0:
        return {**dict.fromkeys(PERCENTILES, 0.0), "mean": 0.0, "max": 0.0}
    found = {name: round(histogram.get_value_at_percentile(p) / 1000, 4) for name, p in PERCENTILES.items()}
    found["mean"] = round(histogram.get_mean_value() / 1000, 4)
    found["max"] = round(histogram.get_max_value() / 1000, 4)
    return found


async def run(job: OpenJob) -> dict[str, Any]:
    """Run one open-loop job; return what it sustained: latency percentiles (ms), achieved rate, failures."""
    loop = asyncio.get_running_loop()
    host_header = f"{job.host}:{job.port}"
    request = f"GET {job.path} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: backworks-bench\r\n\r\n".encode()
    tally = Tally()
    pool = Pool(request, tally)
    for _ in range(max(1, job.connections)):
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: Connection(pool), job.host, job.port), CONNECT_TIMEOUT
        )
        pool.free.append(protocol)
        pool.alive += 1
    connections = list(pool.free)
    interval = 1e9 / job.rate
    start = time.perf_counter_ns()
    measured_from = start + int(job.warmup * 1e9)
    until = measured_from + int(job.duration * 1e9)
    tally.window = (measured_from, until)
    sent = 0
    while True:
        now = time.perf_counter_ns()
        while (due := start + int(sent * interval)) <= now and due < until:
            pool.dispatch(due)
            sent += 1
        if due >= until:
            break
        await asyncio.sleep((due - time.perf_counter_ns()) / 1e9)
    pool.stopping = True
    pool._check_drained()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pool.drained.wait(), DRAIN_TIMEOUT)
    unfinished = tally.outstanding
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    await asyncio.wait([c.closed for c in connections], timeout=DRAIN_TIMEOUT)
    answered = tally.histogram.get_total_count()
    failed = sum(n for status, n in tally.statuses.items() if not 200 <= status < 300)
    failed += len(tally.errors) + unfinished + tally.dropped
    return {
        "rate": job.rate,
        "connections": job.connections,
        "seconds": job.duration,
        "intended": tally.due_in_window,
        "count": answered,
        "achieved": round(answered / job.duration, 1) if job.duration > 0 else 0.0,
        **percentiles_ms(tally.histogram),
        "failed": failed,
        "unfinished": unfinished,
        "dropped": tally.dropped,
        "max_backlog": tally.max_backlog,
        "statuses": {str(k): v for k, v in tally.statuses.items()},
        "errors": tally.errors[:20],
        "completed": tally.completed,
        "histogram": tally.histogram.encode().decode(),
    }
