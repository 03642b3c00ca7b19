"""``backworks up``: supervises the embedded broker, the gateway and one process per plugin replica.

Every child is started as the CLI command a user would type (``backworks serve secure …``), in its own
session so a terminal Ctrl-C reaches only the supervisor, which then stops children in order. The
kernel stops each child if the supervisor itself dies (``die_with_parent``), so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import structlog

from backworks.local.processes import cli_command, die_with_parent, terminate

log = structlog.get_logger("backworks.supervisor")

STOP_GRACE = 7.0
"""Seconds children get to stop after SIGTERM before SIGKILL; the broker stops after them (≤ 10 s total)."""
BROKER_GRACE = 2.0
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_AFTER = 30.0
POLL_INTERVAL = 0.2


@dataclass
class Child:
    """One supervised process."""

    name: str
    args: list[str]
    program: list[str] = field(default_factory=cli_command)
    """What runs ``args``: the ``backworks`` CLI unless told otherwise."""
    cwd: Path | None = None
    """Working directory of the process (the blueprint's folder for the blueprint's ``processes``)."""
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    supervised: bool = False
    """Set once started: from then on, an exit is a crash to report and restart."""
    instance: str | None = None
    """The plugin instance this process is a replica of (None: the broker, the gateway, an extra process)."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.program, *self.args],
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
            stdin=subprocess.DEVNULL,
        )
        self.started_at = time.monotonic()
        self.supervised = True

    def signal(self, signum: int) -> None:
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)


ReplicaFactory = Callable[[str, int], Child]
"""Makes the (not yet started) child for replica ``index`` (0-based) of an instance."""


@dataclass
class Supervisor:
    """Starts children, restarts the ones that die, stops them all on request; scales replicas at run time."""

    broker: Child | None
    services: list[Child]
    replica: ReplicaFactory | None = None
    """How to make one more replica of an instance (``set_replicas``)."""
    stopping: bool = False
    children: list[Child] = field(init=False)
    retiring: list[tuple[Child, float]] = field(init=False, default_factory=list)
    """Replicas told to stop by ``set_replicas``, each with when to kill it if it has not drained by then."""
    scaled: set[str] = field(init=False, default_factory=set)
    """Instances ``set_replicas`` was called for (listed by ``replica_counts`` even at 0)."""

    def __post_init__(self) -> None:
        self.children = ([self.broker] if self.broker else []) + self.services

    def replica_counts(self) -> dict[str, int]:
        """How many replicas of each instance this supervisor runs (retiring ones no longer count; an instance
        scaled to 0 is listed with 0)."""
        counts = dict.fromkeys(self.scaled, 0)
        for child in self.services:
            if child.instance is not None:
                counts[child.instance] = counts.get(child.instance, 0) + 1
        return counts

    def set_replicas(self, instance: str, count: int) -> None:
        """Run ``count`` replicas of ``instance`` from now on: start the missing ones at once; SIGTERM the extra
        ones (the newest first), which drain, finishing their work, and are killed after ``STOP_GRACE`` if not."""
        if count < 0:
            raise ValueError(f"replicas of {instance} must be 0 or more, got {count}")
        self.scaled.add(instance)
        current = [child for child in self.services if child.instance == instance]
        for index in range(len(current), count):
            if self.replica is None:
                raise ValueError("this supervisor was not told how to start replicas")
            child = self.replica(instance, index)
            child.instance = instance
            self.services.append(child)
            self.children.append(child)
            child.start()
            log.info("replica started", child=child.name, pid=child.pid)
        for child in reversed(current[count:]):
            self.services.remove(child)
            self.children.remove(child)
            child.signal(signal.SIGTERM)
            self.retiring.append((child, time.monotonic() + STOP_GRACE))
            log.info("replica stopping (draining)", child=child.name, pid=child.pid)

    def _reap(self, now: float) -> None:
        """Forget retired replicas that exited; kill the ones past their grace."""
        keep = []
        for child, kill_at in self.retiring:
            if not child.alive:
                continue
            if now >= kill_at:
                log.warning("replica did not drain in time; killed", child=child.name, pid=child.pid)
                child.signal(signal.SIGKILL)
            keep.append((child, kill_at))
        self.retiring = keep

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def start_services(self) -> None:
        for child in self.services:
            child.start()

    def check(self) -> None:
        """Restart children that exited on their own, with backoff."""
        now = time.monotonic()
        self._reap(now)
        for child in self.children:
            if child.alive or self.stopping or not child.supervised:
                continue
            if child.process is not None:
                code = child.process.returncode
                if now - child.started_at > STABLE_AFTER:
                    child.restarts = 0
                delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
                log.warning(
                    f"{child.name} exited with code {code}; restarting in {delay:.1f} s",
                    child=child.name, pid=child.pid, code=code, delay=delay,
                )  # fmt: skip
                child.process = None
                child.next_start = now + delay
                child.restarts += 1
            if now >= child.next_start:
                child.start()
                log.info("child restarted", child=child.name, pid=child.pid)

    def run(self, tick: Callable[[], None] | None = None) -> None:
        """Supervise until a stop is requested; ``tick`` runs on every round (scale requests, revision follow-up,
        ``--watch``)."""
        while not self.stopping:
            self.check()
            if tick is not None:
                tick()
            time.sleep(POLL_INTERVAL)

    def stop(self) -> None:
        """SIGTERM the services, SIGKILL what is left after ``STOP_GRACE``, then stop the broker."""
        self.stopping = True
        self._terminate(self.services + [child for child, _ in self.retiring], STOP_GRACE)
        if self.broker:
            self._terminate([self.broker], BROKER_GRACE)

    @staticmethod
    def _terminate(children: list[Child], grace: float) -> None:
        running = [child for child in children if child.process is not None]
        killed = terminate([child.process for child in running if child.process is not None], grace)
        for child in running:
            if child.pid in killed:
                log.warning("child did not stop in time; killed", child=child.name, pid=child.pid)


def wait_until_ready(
    health_url: str, expected: dict[str, int], timeout: float, supervisor: Supervisor, progress: Callable[[str], None]
) -> dict[str, Any] | None:
    """Poll the gateway's health until every instance has its expected replicas live."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline and not supervisor.stopping:
            supervisor.check()
            try:
                last = client.get(health_url).json()
            except (httpx.HTTPError, ValueError):
                progress("waiting for the gateway")
                time.sleep(POLL_INTERVAL)
                continue
            stages: dict[str, dict[str, Any]] = last.get("stages", {}) if isinstance(last, dict) else {}
            live: dict[str, int] = {}
            for item in stages.values():
                live[item["instance"]] = item["live_replicas"]
            missing = {name: n for name, n in expected.items() if live.get(name, 0) < n}
            if not missing:
                return last
            progress("waiting for " + ", ".join(f"{name} ({live.get(name, 0)}/{n})" for name, n in missing.items()))
            time.sleep(POLL_INTERVAL)
    return None
