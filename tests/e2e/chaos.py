"""A running ``backworks up`` for chaos tests, and a client that accounts for every request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from backworks.contracts.events import DeadLetter, StageEvent
from backworks.contracts.names import EVENTS_STREAM, STAGE_COMPLETED_SUBJECT
from backworks.local.ports import free_port
from backworks.pipeline import broker, deadletters
from tests.e2e.processes import children_of, pid_alive, start, stop, wait_healthy


@dataclass
class Stack:
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    sent: dict[str, httpx.Response | Exception] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/_backworks/health", timeout=5).json()
        return body

    def replicas(self, stage: str) -> list[dict[str, Any]]:
        return list(self.health()["stages"][stage]["replicas"])

    def request(self, path: str, fault: str | None = None, timeout: float = 30.0) -> httpx.Response:
        """Send one request and record its outcome under a unique request id."""
        request_id = uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        if fault:
            headers["x-backworks-fault"] = fault
        try:
            response = httpx.get(f"{self.base}{path}", headers=headers, timeout=timeout)
        except Exception as exc:
            with self.lock:
                self.sent[request_id] = exc
            raise
        with self.lock:
            assert request_id not in self.sent
            self.sent[request_id] = response
        assert response.headers.get("x-request-id") == request_id, "the response belongs to this request"
        return response

    def assert_every_request_answered_once(self) -> None:
        failures = {rid: r for rid, r in self.sent.items() if isinstance(r, Exception)}
        assert not failures, f"requests without a response: {failures}"


@contextlib.contextmanager
def running(blueprint: Path, tmp_path: Path, *args: str) -> Iterator[Stack]:
    port = free_port()
    log = tmp_path / "up.log"
    process = start("up", str(blueprint), "--port", str(port), *args, log=log)
    stack = Stack(f"http://127.0.0.1:{port}", process, log)
    children: list[int] = []
    try:
        wait_healthy(stack.base, process=process, log=log)
        children = children_of(process.pid)
        yield stack
        children = children_of(process.pid)
    finally:
        stop(process, timeout=15)
    leftovers = [pid for pid in children if pid_alive(pid)]
    assert leftovers == [], f"orphaned processes: {leftovers}"


STAGE_EVENTS = "bw.evt.stage."


def stage_events(nats_url: str) -> list[StageEvent]:
    """Every stage failure or skip event on the event stream ``BW_EVENTS``, oldest first (request flow events
    and stage completions are left out)."""

    async def read() -> list[StageEvent]:
        client = await broker.connect([nats_url], name="test-events")
        try:
            js = broker.jetstream(client)
            info = await js.stream_info(EVENTS_STREAM)
            found = []
            for sequence in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(EVENTS_STREAM, sequence)
                subject = raw.subject or ""
                if subject.startswith(STAGE_EVENTS) and subject != STAGE_COMPLETED_SUBJECT:
                    found.append(StageEvent.model_validate_json(raw.data or b""))
            return found
        finally:
            await client.close()

    return asyncio.run(read())


def dead_letters(nats_url: str) -> list[DeadLetter]:
    """Every dead letter in ``BW_DLQ``, oldest first."""

    async def read() -> list[DeadLetter]:
        client = await broker.connect([nats_url], name="test-dead-letters")
        try:
            return [letter async for _, letter in deadletters.letters(broker.jetstream(client))]
        finally:
            await client.close()

    return asyncio.run(read())


REPORT_NAME = "chaos-report.json"
"""Figures the chaos tests measure (how fast a dead stage is detected, ...), one JSON file per pytest run."""
REPORT_ENV = "BACKWORKS_CHAOS_REPORT"
"""Where to write the report instead (CI keeps it there: pytest prunes old base temporary directories)."""


def report(tmp_path: Path, test: str, **figures: float) -> Path:
    """Record ``figures`` (seconds unless named otherwise) under ``test`` in the run's chaos report.

    The report lives in pytest's base temporary directory (the parent of every ``tmp_path``), or at
    ``$BACKWORKS_CHAOS_REPORT``, so one file collects the figures of every chaos test of a run; its path
    is printed. A promise about speed
    is a figure to look at here, not a tight assertion: the tests bound times generously relative to
    the configured values.
    """
    path = Path(os.environ.get(REPORT_ENV) or tmp_path.parent / REPORT_NAME)
    with _report_lock:
        found: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        found[test] = {name: round(value, 4) for name, value in figures.items()}
        path.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    print(f"chaos report: {path} ({test})")
    return path


T = TypeVar("T")
_report_lock = threading.Lock()


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll ``predicate()`` until it returns something true, and return that; HTTP and lookup errors count as false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, IndexError):
            result = predicate()
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
