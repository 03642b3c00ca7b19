"""``backworks scale`` against a running ``backworks up``: replicas added and drained under load, no request failed."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from backworks.local.state import STATE_DIR_ENV
from tests.e2e.chaos import report, running, wait_for
from tests.e2e.processes import BACKWORKS
from tests.files import write_blueprint

pytestmark = [pytest.mark.e2e]

THREADS = 3
BLUEPRINT = """name: scaling
defaults: {timeout_ms: 10000}
plugins:
  stamp: {type: request-headers, critical: true, config: {set: {x-stamped: "yes"}}}
endpoints:
  hello: {path: /hello, plugins: [stamp], handler: {type: mock, config: {body: ok}}}
"""


def scale(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [BACKWORKS, "scale", *args, "--state-dir", str(state)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_scaling_up_and_back_down_under_load_fails_no_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv(STATE_DIR_ENV, str(state))
    blueprint = write_blueprint(tmp_path, BLUEPRINT)
    with running(blueprint, tmp_path) as stack:

        def live() -> int:
            return int(stack.health()["stages"]["stamp.request"]["live_replicas"])

        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                stack.request("/hello")

        threads = [threading.Thread(target=load) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            started = time.monotonic()
            up = scale(state, "stamp=3")
            assert up.returncode == 0, up.stderr
            assert "stamp: 3 replicas" in up.stdout
            wait_for(lambda: live() == 3)
            scaled_up_after = time.monotonic() - started
            time.sleep(1.0)
            first = {r["pid"] for r in stack.replicas("stamp.request")}
            started = time.monotonic()
            down = scale(state, "stamp=1")
            assert down.returncode == 0, down.stderr
            wait_for(lambda: live() == 1)
            scaled_down_after = time.monotonic() - started
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        (kept,) = stack.replicas("stamp.request")
        assert kept["pid"] in first
        stack.assert_every_request_answered_once()
        answers = [r for r in stack.sent.values() if isinstance(r, httpx.Response)]
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {200: len(stack.sent)}, [r.text for r in answers if r.status_code != 200][:3]
        log = stack.log.read_text()
        assert "did not drain in time" not in log and "exited with code" not in log

        # What cannot be done is refused, naming what was wrong.
        unknown = scale(state, "nope=2")
        assert unknown.returncode != 0 and "unknown instance 'nope'" in unknown.stderr + unknown.stdout
        negative = scale(state, "stamp=-1")
        assert negative.returncode != 0 and "0 or more" in negative.stderr + negative.stdout
    gone = scale(state, "stamp=2")
    assert gone.returncode != 0 and "no `backworks up` is running" in gone.stderr + gone.stdout
    report(
        tmp_path, "scale", requests=len(stack.sent), scaled_1_to_3_live_after=scaled_up_after,
        scaled_3_to_1_live_after=scaled_down_after,
    )  # fmt: skip
