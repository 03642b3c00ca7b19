"""``backworks top`` against a real stack (``backworks up`` and an analytics service), as the ``tap`` identity."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from backworks.local.ports import free_port
from backworks.top import StageRow, table
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy
from tests.files import EXAMPLE

pytestmark = pytest.mark.e2e

STAGES = {"stamp.request", "hello-handler.request", "secure.response"}
WARMUP = 20


def test_top_once_shows_every_stage_with_replicas_rate_p99_and_breaker(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(tmp_path / "state")}
    log = tmp_path / "up.log"
    analytics_log = tmp_path / "analytics.log"
    up = start("up", str(EXAMPLE), "--port", str(port), "--replicas", "stamp=2", log=log, cwd=tmp_path, env=env)
    done = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while not done.is_set():
                assert http.get("/hello/top").status_code == 200
                time.sleep(0.01)

    def top(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BACKWORKS, "top", str(EXAMPLE), "--once", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60, check=False)  # fmt: skip

    sender = threading.Thread(target=traffic, daemon=True)
    analytics = None
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process=up, log=log)
        analytics = start("analytics", "serve", str(EXAMPLE), log=analytics_log, cwd=tmp_path, env=env)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(WARMUP):
                assert http.get("/hello/warm").status_code == 200
        sender.start()

        def analysed() -> bool:  # the analytics service has read the warm-up's events: p99 known per instance
            try:
                found = httpx.get(f"http://127.0.0.1:{port}/_backworks/report?since=5m", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            rows = found.get("instances") or {}
            return all((rows.get(name) or {}).get("p99_ms") for name in ("stamp", "hello-handler", "secure"))

        deadline = time.monotonic() + 60
        while not analysed():
            assert time.monotonic() < deadline, analytics_log.read_text()[-2000:]
            time.sleep(0.5)
        found = top("--format", "json", "--interval", "1")
        assert found.returncode == 0, found.stderr
        stages: dict[str, dict[str, object]] = json.loads(found.stdout)["stages"]
        assert set(stages) == STAGES
        assert stages["stamp.request"]["replicas"] == 2
        assert stages["hello-handler.request"]["replicas"] == 1
        for label, row in stages.items():
            assert row["breaker"] == "closed", label
            assert isinstance(row["delivered"], int) and row["delivered"] >= WARMUP, (label, row)
            assert isinstance(row["pending"], int) and isinstance(row["ack_pending"], int)
            assert isinstance(row["rate"], float) and row["rate"] > 0, (label, row)
            assert isinstance(row["p99_ms"], float) and row["p99_ms"] > 0, (
                label,
                row,
                analytics_log.read_text()[-2000:],
            )

        # The text view shows the same rows (rendered here: one more CLI start costs ~8 s on a loaded machine).
        rendered = Console(width=200, record=True)
        rendered.print(table([StageRow(**row) for row in stages.values()], "top"))  # type: ignore[arg-type]  # the JSON's fields
        text = rendered.export_text()
        assert "msgs/s" in text and "hello-handler.request" in text and "closed" in text
    finally:
        done.set()
        if sender.is_alive():
            sender.join(timeout=15)
        if analytics is not None:
            stop(analytics)
        stop(up, timeout=15)
