"""``apply``, ``history``, ``rollback`` and ``up --watch`` as a user runs them against ``backworks up``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from backworks.local.ports import free_port
from backworks.pipeline.capabilities import ALLOW_FAULT_ENV
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy

pytestmark = pytest.mark.e2e

BLUEPRINT = """name: cli
plugins:
  tag: {{type: response-headers, config: {{set: {{x-rev: "{rev}"}}}}}}
endpoints:
  hello: {{path: /hello, plugins: [tag], handler: {{type: mock, config: {{body: ok}}}}}}
"""
WITH_FAULT = """name: cli
plugins:
  tag: {type: response-headers, config: {set: {x-rev: "f"}}}
  chaos: {type: fault, config: {mode: none}}
endpoints:
  hello: {path: /hello, plugins: [tag, chaos], handler: {type: mock, config: {body: ok}}}
"""


def backworks(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run([BACKWORKS, *args], capture_output=True, text=True, timeout=120, check=False, env=environment)


def served_rev(base: str) -> str | None:
    value: str | None = httpx.get(f"{base}/hello", timeout=5).headers.get("x-rev")
    return value


def live_replicas(base: str, stage: str) -> int:
    count: int = httpx.get(f"{base}/_backworks/health", timeout=5).json()["stages"][stage]["live_replicas"]
    return count


def eventually_rev(base: str, rev: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_rev(base) == rev:
            return
        time.sleep(0.2)
    raise AssertionError(f"x-rev {rev!r} not served within {timeout} s (serving {served_rev(base)!r})")


@pytest.mark.timeout(300)
def test_apply_refuses_what_the_fleet_cannot_run_and_watch_rollback_history_work(tmp_path: Path) -> None:
    port, nats_port = free_port(), free_port()
    base, nats = f"http://127.0.0.1:{port}", f"nats://127.0.0.1:{nats_port}"
    path = tmp_path / "blueprint.yaml"
    path.write_text(BLUEPRINT.format(rev="1"))
    log = tmp_path / "up.log"
    up = start("up", str(path), "--port", str(port), "--nats-port", str(nats_port), "--watch", log=log)
    try:
        wait_healthy(base, process=up, log=log)
        assert served_rev(base) == "1"

        # An invalid blueprint: every problem, as `validate` reports them, and exit code 1; nothing changes.
        broken = tmp_path / "broken.yaml"
        broken.write_text(BLUEPRINT.format(rev="x").replace("type: mock", "type: nope"))
        refused = backworks("apply", str(broken), "--nats", nats)
        assert refused.returncode == 1
        assert refused.stdout == backworks("validate", str(broken)).stdout
        assert "nope" in refused.stdout

        # The same blueprint again: a no-op.
        same = backworks("apply", str(path), "--nats", nats)
        assert same.returncode == 0 and "no changes" in same.stdout, same.stdout + same.stderr

        # A plugin the replicas may not run (the fault plugin needs an opt-in they were not started with): refused
        # before anything switches, naming who and why, although it is valid where `apply` runs.
        faulty = tmp_path / "faulty.yaml"
        faulty.write_text(WITH_FAULT)
        fleet = backworks("apply", str(faulty), "--nats", nats, env={ALLOW_FAULT_ENV: "1"})
        assert fleet.returncode == 1, fleet.stdout + fleet.stderr
        lines = [line for line in fleet.stdout.splitlines() if line.startswith("refused:")]
        assert any(line.startswith("refused: gateway ") and ALLOW_FAULT_ENV in line for line in lines), fleet.stdout
        assert any(line.startswith("refused: stage tag (replica ") for line in lines), fleet.stdout
        assert served_rev(base) == "1"

        # --watch: an edit is applied...
        path.write_text(BLUEPRINT.format(rev="2"))
        eventually_rev(base, "2")
        # ...an invalid edit is reported and ignored: the running revision stays...
        path.write_text("name: [unclosed")
        time.sleep(3.0)
        assert served_rev(base) == "2"
        assert "is invalid; the running revision stays" in log.read_text()
        # ...and the next valid one is applied again.
        path.write_text(BLUEPRINT.format(rev="3"))
        eventually_rev(base, "3")

        # rollback: the revision before, stored as a new one.
        back = backworks("rollback", "--nats", nats, "-m", "too bright")
        assert back.returncode == 0, back.stdout + back.stderr
        assert "revision 4 is running" in back.stdout
        assert served_rev(base) == "2"

        # A changed replica count scales the running instance.
        scaled = tmp_path / "scaled.yaml"
        scaled.write_text(BLUEPRINT.format(rev="2").replace("tag: {", "tag: {replicas: 2, "))
        more = backworks("apply", str(scaled), "--nats", nats)
        assert more.returncode == 0, more.stdout + more.stderr
        deadline = time.monotonic() + 60
        while live_replicas(base, "tag.response") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert live_replicas(base, "tag.response") == 2

        history = backworks("history", "--nats", nats, "--format", "json")
        rows = json.loads(history.stdout)
    finally:
        stop(up, timeout=20)
    assert [row["number"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["previous"] for row in rows] == [None, 1, 2, 3, 4]
    assert rows[3]["message"] == "too bright"
    assert rows[1]["summary"] == "~1 instance"
    assert "blueprint" not in rows[0], "history lists revisions, not their whole blueprints"
