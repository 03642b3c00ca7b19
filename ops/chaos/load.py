"""The chaos report's load: a few threads sending requests, each with a unique ``x-request-id``, every outcome kept.

What a fault did is read from the outcomes afterwards (``summarize``): answered by status, degraded (the answer
names skipped stages in ``x-backworks-skipped``), lost (no HTTP response at all), duplicated (an answer carrying
another request's id, or a request id the handler's ledger holds more than once), the time to full recovery and
the window in which normal requests failed (first to last sent that did not get a 200).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

SKIPPED_HEADER = "x-backworks-skipped"
FAULT_HEADER = "x-backworks-fault"
CLIENT_TIMEOUT = 30.0
"""Seconds a request may take before the client gives up (far past the blueprint's 5 s deadline): lost if so."""
PAUSE = 0.01
"""Seconds each thread waits between requests: a steady, bounded load that leaves the 2 shared cores room."""


@dataclass
class Outcome:
    """One request: when it was sent (monotonic), what came back, and whether it carried the injected fault."""

    request_id: str
    sent: float
    fault: str | None
    status: int | None = None
    degraded: bool = False
    error: str | None = None
    foreign_id: bool = False
    """The answer carried another request's id."""

    @property
    def full(self) -> bool:
        """A full answer: 200 with no stage skipped."""
        return self.status == 200 and not self.degraded


@dataclass
class Load:
    """Threads sending ``GET url`` until ``stop``; ``send`` sends one more (e.g. carrying a fault) from the caller."""

    url: str
    threads: int
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"chaos-load-{index}", daemon=True)
            worker.start()
            self.workers.append(worker)

    def stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.join()

    def normal_sent(self) -> int:
        with self.lock:
            return sum(1 for outcome in self.outcomes if outcome.fault is None)

    def recent_full(self, count: int, since: float) -> bool:
        """Whether the last ``count`` answered normal requests, all sent after ``since``, were full answers."""
        with self.lock:
            done = [o for o in self.outcomes if o.fault is None and o.sent >= since and (o.status or o.error)]
        return len(done) >= count and all(o.full for o in done[-count:])

    def send(self, client: httpx.Client, fault: str | None = None) -> Outcome:
        request_id = uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        if fault:
            headers[FAULT_HEADER] = fault
        outcome = Outcome(request_id, time.monotonic(), fault)
        with self.lock:
            self.outcomes.append(outcome)
        try:
            response = client.get(self.url, headers=headers)
        except httpx.HTTPError as exc:
            outcome.error = type(exc).__name__
            return outcome
        outcome.foreign_id = response.headers.get("x-request-id") != request_id
        outcome.degraded = bool(response.headers.get(SKIPPED_HEADER))
        outcome.status = response.status_code
        return outcome

    def _run(self) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            while not self.stopping.is_set():
                self.send(client)
                time.sleep(PAUSE)


def recovery(outcomes: list[Outcome], fault_end: float) -> float | None:
    """Seconds from ``fault_end`` to the first moment from which every normal request (sent then or later) got a
    full answer; 0 if none after ``fault_end`` failed; None if the last one still did not (not recovered)."""
    after = sorted((o for o in outcomes if o.fault is None and o.sent >= fault_end), key=lambda o: o.sent)
    if not after:
        return None
    bad = [index for index, outcome in enumerate(after) if not outcome.full]
    if not bad:
        return 0.0
    if bad[-1] == len(after) - 1:
        return None
    return after[bad[-1] + 1].sent - fault_end


def summarize(outcomes: list[Outcome], fault_end: float, ledger: Counter[str]) -> dict[str, Any]:
    """The figures of one fault's row (see the module docstring)."""
    answered = Counter(str(o.status) for o in outcomes if o.status is not None)
    handled_twice = [o.request_id for o in outcomes if ledger.get(o.request_id, 0) > 1]
    recovered = recovery(outcomes, fault_end)
    failed = [o.sent for o in outcomes if o.status != 200 and o.fault is None]
    return {
        "sent": len(outcomes),
        "fault_requests": sum(1 for o in outcomes if o.fault is not None),
        "answered": dict(sorted(answered.items())),
        "degraded": sum(1 for o in outcomes if o.status == 200 and o.degraded),
        "lost": sum(1 for o in outcomes if o.status is None),
        "lost_errors": dict(Counter(o.error for o in outcomes if o.error)),
        "duplicated": len(handled_twice) + sum(1 for o in outcomes if o.foreign_id),
        "recovery_s": None if recovered is None else round(recovered, 3),
        "failed_window_s": round(max(failed) - min(failed), 3) if failed else 0.0,
    }
