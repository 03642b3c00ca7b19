"""``backworks up`` on the example blueprint, as a user runs it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from backworks.pipeline.ports import free_port
from backworks.pipeline.supervisor import BROKER_GRACE, STOP_GRACE
from tests.conftest import EXAMPLE
from tests.e2e.processes import children_of, pid_alive, start, stop, wait_healthy

pytestmark = pytest.mark.e2e


def test_up_serves_the_example_restarts_dead_children_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = start("up", str(EXAMPLE), "--port", str(port), log=tmp_path / "up.log")
    try:
        health = wait_healthy(base, process=up, log=tmp_path / "up.log")
        children = children_of(up.pid)
        response = httpx.get(f"{base}/hello/world", timeout=5)
        assert response.status_code == 200, response.text
        assert response.json() == {"greeting": "Hello, world!"}
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-request-id"]
        timing = [e.split(";")[0].strip() for e in response.headers["server-timing"].split(",")]
        assert timing == ["stamp.request", "hello-handler.request", "secure.response", "total"]
        assert health["nats"]["connected"] is True  # type: ignore[index]

        # Every child is the CLI command a user would run by hand.
        commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in children}
        assert any("backworks serve secure" in c for c in commands.values()), commands
        assert any("backworks gateway" in c for c in commands.values()), commands
        assert any("backworks nats" in c for c in commands.values()), commands

        # A child that dies is reported and restarted; the route works again.
        stages = health["stages"]  # type: ignore[index]
        victim = stages["hello-handler.request"]["replicas"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = httpx.get(f"{base}/_backworks/health", timeout=2).json()
            pids = [r["pid"] for r in body["stages"]["hello-handler.request"]["replicas"]]
            if pids and victim not in pids:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the killed handler was not restarted")
        assert httpx.get(f"{base}/hello/again", timeout=5).json() == {"greeting": "Hello, again!"}
        assert "exited" in (tmp_path / "up.log").read_text()
        children = children_of(up.pid)
    finally:
        took = stop(up, timeout=15)
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert took < STOP_GRACE + BROKER_GRACE + 3, "stopped within its own grace periods"
    leftovers = [pid for pid in children if pid_alive(pid)]
    assert leftovers == [], f"orphaned processes: {leftovers}"
