"""One of two replicas of a critical stage frozen under steady load costs no request (issue 10).

The frozen replica holds the envelopes it had pulled; the stall watch takes each back once the stage's time limit
has passed and hands it to the live replica, so every request is answered 200, once, and the handler runs once
per request id. The frozen replica's late work, after SIGCONT, is dropped harmlessly.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ops.chaos.chaos_handler import LEDGER_ENV
from tests.e2e.chaos import report, running, wait_for
from tests.files import ROOT, write_blueprint

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.usefixtures("allow_fault")]

FREEZE = 5.0
"""Seconds the replica stays stopped: past the liveness TTL, so its heartbeat lapses while it holds envelopes."""
THREADS = 4
BLUEPRINT = """name: freeze
defaults: {timeout_ms: 10000}
plugins:
  front: {type: fault, critical: true, timeout_ms: 500, replicas: 2, config: {header: null}}
endpoints:
  api:
    path: /api
    plugins: [front]
    handler: {type: python, timeout_ms: 1000, config: {function: "chaos_handler:answer"}}
"""


def test_a_frozen_replica_of_a_critical_stage_costs_no_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv(LEDGER_ENV, str(ledger))  # `up` hands the environment on to the handler's process
    shutil.copy(ROOT / "ops" / "chaos" / "chaos_handler.py", tmp_path / "chaos_handler.py")
    blueprint = write_blueprint(tmp_path, BLUEPRINT)
    with running(blueprint, tmp_path) as stack:
        wait_for(lambda: len(stack.replicas("front.request")) == 2)
        stop = threading.Event()
        errors: list[BaseException] = []

        def load() -> None:
            try:
                while not stop.is_set():
                    stack.request("/api")
            except BaseException as exc:  # recorded by stack.request too; the assertion below names it
                errors.append(exc)

        threads = [threading.Thread(target=load) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            pid = stack.replicas("front.request")[0]["pid"]
            before = len(stack.sent)
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(FREEZE)
            finally:
                os.kill(pid, signal.SIGCONT)
            during = len(stack.sent) - before
            time.sleep(2.0)  # the thawed replica's late work is dropped meanwhile
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert not errors, errors
        stack.assert_every_request_answered_once()
        answers = [r for r in stack.sent.values() if isinstance(r, httpx.Response)]
        failed = [r.text for r in answers if r.status_code != 200]
        assert not failed, f"{Counter(r.status_code for r in answers)}: {failed[:3]}"
        time.sleep(0.5)  # the handler writes its ledger line before it answers: nothing is still on its way
        handled = Counter(line for line in ledger.read_text().splitlines() if line)
        assert [rid for rid, count in handled.items() if count > 1] == [], "a handler ran twice for one request"
        assert set(handled) == set(stack.sent), "every answered request ran the handler exactly once"
        assert during > 0, "the load went on while the replica was frozen"
        assert "exited with code" not in stack.log.read_text(), "no replica was restarted or killed"
    report(tmp_path, "replica_frozen", requests=len(stack.sent), requests_while_frozen=during, frozen_for=FREEZE)
