"""The supervisor behind ``backworks up``, with real short-lived child processes (Python one-liners)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from backworks.local import supervisor as supervision
from backworks.local.processes import terminate
from backworks.local.supervisor import Child, Supervisor

PYTHON = [sys.executable]
BEHAVIOUR = """
import signal, sys, time
journal, label, on_term = sys.argv[1], sys.argv[2], sys.argv[3]
def write(text):
    with open(journal, "a") as out:
        out.write(f"{label} {text}\\n")
def stop(signum, frame):
    write("got SIGTERM")
    if on_term == "ignore":
        return
    time.sleep(0.3)  # a child that takes a moment to stop
    write("exited")
    sys.exit(int(on_term))
signal.signal(signal.SIGTERM, stop)
write("ready")
while True:
    time.sleep(0.05)
"""


def child(name: str, journal: Path, on_term: str = "0") -> Child:
    """A child that records what happens to it in ``journal``; ``on_term``: its exit code, or ``ignore``."""
    return Child(name, ["-c", BEHAVIOUR, str(journal), name, on_term], program=PYTHON)


def wait_ready(journal: Path, *names: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = journal.read_text() if journal.exists() else ""
        if all(f"{name} ready" in text for name in names):
            return
        time.sleep(0.02)
    raise AssertionError(f"children not ready: {journal.read_text() if journal.exists() else ''}")


def test_a_child_that_exits_is_reported_and_restarted_with_growing_backoff() -> None:
    crasher = Child("crasher", ["-c", "import sys; sys.exit(3)"], program=PYTHON)
    supervisor = Supervisor(None, [crasher])
    restarted_at: list[float] = []
    exited_at: list[float] = []
    with capture_logs() as logs:
        supervisor.start_services()
        deadline = time.monotonic() + 20
        while len(restarted_at) < 2 and time.monotonic() < deadline:
            before = len(logs)
            supervisor.check()
            for entry in logs[before:]:
                (exited_at if "exited with code" in entry["event"] else restarted_at).append(time.monotonic())
            time.sleep(0.02)
        supervisor.stop()
    exits = [entry for entry in logs if "exited with code" in entry["event"]]
    assert [(e["child"], e["code"], e["delay"]) for e in exits[:2]] == [("crasher", 3, 0.5), ("crasher", 3, 1.0)]
    assert len(restarted_at) >= 2 and crasher.restarts >= 2
    assert restarted_at[0] - exited_at[0] >= 0.45, "waited the first backoff before restarting"
    assert restarted_at[1] - exited_at[1] >= 0.95, "the second backoff is longer"


def test_a_child_up_long_enough_starts_its_backoff_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "STABLE_AFTER", 0.0)
    crasher = Child("crasher", ["-c", "import sys; sys.exit(1)"], program=PYTHON)
    supervisor = Supervisor(None, [crasher])
    with capture_logs() as logs:
        supervisor.start_services()
        deadline = time.monotonic() + 20
        while sum("exited with code" in e["event"] for e in logs) < 2 and time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.02)
        supervisor.stop()
    delays = [e["delay"] for e in logs if "exited with code" in e["event"]]
    assert delays[:2] == [0.5, 0.5]


def test_stop_stops_every_service_before_the_broker(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    broker = child("broker", journal)
    services = [child("gateway", journal), child("stage", journal, on_term="4")]
    supervisor = Supervisor(broker, services)
    broker.start()
    supervisor.start_services()
    wait_ready(journal, "broker", "gateway", "stage")
    supervisor.stop()
    lines = journal.read_text().splitlines()
    broker_signalled = lines.index("broker got SIGTERM")
    for name in ("gateway", "stage"):
        assert lines.index(f"{name} got SIGTERM") < lines.index(f"{name} exited") < broker_signalled, lines
    assert lines[-1] == "broker exited"
    assert supervisor.stopping
    codes = {item.name: item.process.returncode for item in supervisor.children if item.process}
    assert codes == {"broker": 0, "gateway": 0, "stage": 4}, "each child keeps its own exit code"


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "STOP_GRACE", 0.5)
    journal = tmp_path / "journal"
    stubborn, polite = child("stubborn", journal, on_term="ignore"), child("polite", journal)
    supervisor = Supervisor(None, [stubborn, polite])
    supervisor.start_services()
    wait_ready(journal, "stubborn", "polite")
    with capture_logs() as logs:
        started = time.monotonic()
        supervisor.stop()
        took = time.monotonic() - started
    assert stubborn.process is not None and stubborn.process.returncode == -signal.SIGKILL
    assert polite.process is not None and polite.process.returncode == 0
    assert [(e["event"], e["child"]) for e in logs] == [("child did not stop in time; killed", "stubborn")]
    assert 0.5 <= took < 5


def test_terminate_keeps_exit_codes_reaps_the_exited_and_names_the_killed(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    done = subprocess.Popen([*PYTHON, "-c", "raise SystemExit(9)"])
    done.wait()
    polite = subprocess.Popen([*PYTHON, "-c", BEHAVIOUR, str(journal), "polite", "7"])
    stubborn = subprocess.Popen([*PYTHON, "-c", BEHAVIOUR, str(journal), "stubborn", "ignore"])
    wait_ready(journal, "polite", "stubborn")
    killed = terminate([done, polite, stubborn], grace=1.0)
    assert killed == [stubborn.pid]
    assert (done.returncode, polite.returncode, stubborn.returncode) == (9, 7, -signal.SIGKILL)


def test_set_replicas_starts_the_missing_ones_and_drains_the_extra_ones(tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"

    def replica(instance: str, index: int) -> Child:
        return child(f"{instance}-{index}", journal)

    first = replica("stamp", 0)
    first.instance = "stamp"
    supervisor = Supervisor(None, [first], replica)
    try:
        supervisor.start_services()
        supervisor.set_replicas("stamp", 3)
        assert supervisor.replica_counts() == {"stamp": 3}
        wait_ready(journal, "stamp-0", "stamp-1", "stamp-2")
        supervisor.set_replicas("stamp", 1)
        assert supervisor.replica_counts() == {"stamp": 1}
        assert [c.name for c in supervisor.services] == ["stamp-0"], "the newest go first"
        deadline = time.monotonic() + 20
        while supervisor.retiring and time.monotonic() < deadline:
            supervisor.check()  # reaps the drained ones; never restarts them
            time.sleep(0.05)
        assert supervisor.retiring == []
        text = journal.read_text()
        assert "stamp-1 exited" in text and "stamp-2 exited" in text, "SIGTERM: each finished before it exited"
        assert text.count("stamp-1 ready") == 1, "a replica scaled away is not restarted"
        supervisor.set_replicas("stamp", 0)
        assert supervisor.replica_counts() == {"stamp": 0}, "scaled to 0, still known"
        with pytest.raises(ValueError, match="0 or more"):
            supervisor.set_replicas("stamp", -1)
    finally:
        supervisor.stop()
