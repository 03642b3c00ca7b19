"""``backworks up`` on the example blueprint, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from backworks.local.ports import free_port
from backworks.local.supervisor import BROKER_GRACE, STOP_GRACE
from tests.e2e.processes import BACKWORKS, children_of, pid_alive, start, stop, wait_healthy
from tests.files import EXAMPLE

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
        assert health["nats"]["connected"] is True

        # Every child is the CLI command a user would run by hand.
        commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in children}
        assert any("backworks serve secure" in c for c in commands.values()), commands
        assert any("backworks gateway" in c for c in commands.values()), commands
        assert any("backworks nats" in c for c in commands.values()), commands

        # A child that dies is reported and restarted; the route works again.
        stages = health["stages"]
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
        lines = (tmp_path / "up.log").read_text().splitlines()
        reported = [line for line in lines if "exited" in line]
        assert len(reported) == 1, f"each supervisor event is reported once: {reported}"
        event = json.loads(reported[0])
        assert (event["child"], event["pid"], event["code"]) == ("serve hello-handler", victim, -signal.SIGKILL)
        assert event["event"].startswith("serve hello-handler exited with code -9; restarting in")
        children = children_of(up.pid)
    finally:
        took = stop(up, timeout=15)
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert took < STOP_GRACE + BROKER_GRACE + 3, "stopped within its own grace periods"
    leftovers = [pid for pid in children if pid_alive(pid)]
    assert leftovers == [], f"orphaned processes: {leftovers}"


def _listener() -> tuple[socket.socket, int]:
    """A socket that holds a loopback port, as another program would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("option", ["--port", "--nats-port"])
def test_up_on_a_taken_port_says_so_and_exits_at_once(tmp_path: Path, option: str) -> None:
    holder, taken = _listener()
    other = str(free_port())
    ports = (
        ["--port", str(taken), "--nats-port", other] if option == "--port" else ["--port", other, option, str(taken)]
    )
    try:
        started = time.monotonic()
        result = subprocess.run(
            [BACKWORKS, "up", str(EXAMPLE), *ports], capture_output=True, text=True, timeout=30, cwd=tmp_path
        )
        took = time.monotonic() - started
    finally:
        holder.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {taken} is in use" in result.stderr
    assert option in result.stderr
    assert took < 10, "must not retry the child forever"
