"""A lean HTTP/1.1 keep-alive load generator, run in its own process.

``python -m ops.bench.loadgen`` reads one job per line (JSON) on stdin and answers each with one line
of JSON on stdout, so the harness keeps a single warm process and can read its CPU time around each
measurement. Each connection keeps exactly one request in flight and sends the next one from the
protocol callback that completes the previous one: no task, future or stream per request, which keeps
the client's own cost per request a few microseconds (its ceiling is checked against a bare endpoint).
A job with a ``rate`` runs the open loop instead (``ops.bench.openloop``: fixed arrival rate, no coordinated
omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

from ops.bench import openloop

CONNECT_TIMEOUT = 5.0
DRAIN_TIMEOUT = 10.0
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"


@dataclass
class Job:
    """One measurement: ``connections`` clients, each with one request in flight, for ``duration`` seconds."""

    host: str
    port: int
    path: str
    connections: int
    duration: float
    warmup: float = 0.0
    max_requests: int = 0
    """Stop after this many measured requests (0: no limit)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass
class Tally:
    """What one job measured: nanosecond latencies of the responses completed in the measured window."""

    latencies: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    measuring: bool = False
    running: bool = True
    outstanding: int = 0
    completed: int = 0
    """Every response, warm-up and drain included: what the servers' CPU time is divided by."""


class Connection(asyncio.Protocol):
    """One keep-alive connection issuing requests back to back."""

    def __init__(self, request: bytes, tally: Tally, limit: int, done: asyncio.Event, idle: asyncio.Event) -> None:
        self.request = request
        self.tally = tally
        self.limit = limit
        self.done = done
        self.idle = idle
        self.buffer = b""
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.tally.outstanding += 1
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(CONTENT_LENGTH)
        if at < 0:
            self.fail("response without content-length")
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + len(CONTENT_LENGTH) : line_end if line_end > 0 else len(head)])
        total = end + len(HEADER_END) + length
        if len(self.buffer) < total:
            return
        finished = time.perf_counter_ns()
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[total:]
        tally = self.tally
        tally.outstanding -= 1
        tally.completed += 1
        if tally.measuring:
            tally.latencies.append(finished - self.sent_at)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if self.limit and len(tally.latencies) >= self.limit:
                self.done.set()
        if tally.running:
            self.send()
        elif tally.outstanding <= 0:
            self.idle.set()

    def fail(self, reason: str) -> None:
        self.tally.errors.append(reason)
        self.tally.outstanding -= 1
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tally.running:
            self.tally.errors.append(f"connection lost: {exc!r}")
        if not self.closed.done():
            self.closed.set_result(None)


async def run(job: Job) -> dict[str, Any]:
    """Run one job; return the latencies (ns), statuses, errors and the measured window."""
    loop = asyncio.get_running_loop()
    host_header = f"{job.host}:{job.port}"
    request = f"GET {job.path} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: backworks-bench\r\n\r\n".encode()
    tally = Tally()
    done, idle = asyncio.Event(), asyncio.Event()
    connections: list[Connection] = []

    def new_connection() -> Connection:
        return Connection(request, tally, job.max_requests, done, idle)

    for _ in range(job.connections):
        _, protocol = await asyncio.wait_for(
            loop.create_connection(new_connection, job.host, job.port), CONNECT_TIMEOUT
        )
        connections.append(protocol)
    for connection in connections:
        connection.send()
    await asyncio.sleep(job.warmup)
    tally.measuring = True
    started = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), job.duration)
    tally.measuring = False
    ended = time.perf_counter()
    tally.running = False
    if tally.outstanding > 0:
        # Let the last requests finish so their work does not spill into the next measurement.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), DRAIN_TIMEOUT)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    await asyncio.wait([c.closed for c in connections], timeout=DRAIN_TIMEOUT)
    return {
        "latencies_ns": tally.latencies,
        "statuses": {str(k): v for k, v in tally.statuses.items()},
        "errors": tally.errors[:20],
        "error_count": len(tally.errors),
        "elapsed": ended - started,
        "completed": tally.completed,
    }


async def open_loop(data: dict[str, Any]) -> dict[str, Any]:
    """A job with a ``rate``: the open loop (``ops.bench.openloop``)."""
    fields = openloop.OpenJob.__dataclass_fields__
    return await openloop.run(openloop.OpenJob(**{key: data[key] for key in fields if key in data}))


async def serve_jobs() -> None:
    """Answer one JSON line per job line until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        try:
            data = json.loads(line)
            result = await (open_loop(data) if data.get("rate") else run(Job.from_json(data)))
        except Exception as exc:  # reported to the harness, which stops the benchmark with it
            result = {"fatal": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


def main() -> None:
    import uvloop

    uvloop.run(serve_jobs())


if __name__ == "__main__":
    main()
