"""The faults the chaos report injects, in order; each returns when its fault is over (a monotonic time).

Process faults hit the stack of ``ops/chaos/chaos.yaml``: ``front`` (critical, two replicas), ``victim`` (critical,
one replica), ``opt`` (optional, one replica) and the embedded nats-server, all supervised by ``backworks up``.
Plugin faults are requests carrying ``x-backworks-fault: <mode>``, which only ``victim`` reads.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ops.chaos.load import CLIENT_TIMEOUT, Load

FREEZE = 3.0
"""Seconds a SIGSTOPped process stays stopped."""
FAULT_REQUESTS = 5
"""Requests carrying a plugin fault, sent together, per plugin fault."""
BROKER_BACK_TIMEOUT = 60.0
CONNECT_POLL = 0.02


class Stack(Protocol):
    """What a fault needs of the running stack."""

    def replica_pids(self, stage: str) -> list[int]: ...

    def broker(self) -> tuple[int, int]:
        """The nats-server's pid and port."""
        ...


Inject = Callable[[Stack, Load], float]


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Inject


def _freeze(stage: str, index: int = 0) -> Inject:
    def inject(stack: Stack, load: Load) -> float:
        pid = stack.replica_pids(stage)[index]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(FREEZE)
        finally:
            os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    return inject


def _kill_replica(stack: Stack, load: Load) -> float:
    os.kill(stack.replica_pids("front.request")[0], signal.SIGKILL)
    return time.monotonic()


def _restart_broker(stack: Stack, load: Load) -> float:
    """SIGKILL the nats-server; over once it accepts connections again (``backworks up`` restarts it)."""
    pid, port = stack.broker()
    os.kill(pid, signal.SIGKILL)
    give_up = time.monotonic() + BROKER_BACK_TIMEOUT
    time.sleep(0.2)  # the listening socket closes with the process
    while time.monotonic() < give_up:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic()
        except OSError:
            time.sleep(CONNECT_POLL)
    raise RuntimeError(f"the broker did not come back on port {port} within {BROKER_BACK_TIMEOUT:.0f} s")


def _plugin(mode: str, requests: int = FAULT_REQUESTS) -> Inject:
    def inject(stack: Stack, load: Load) -> float:
        def one(_: Any) -> None:
            with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
                load.send(client, fault=mode)

        with ThreadPoolExecutor(requests) as pool:
            list(pool.map(one, range(requests)))
        return time.monotonic()

    return inject


STOP = f"SIGSTOP the only replica of {{}} stage for {FREEZE:.0f} s"
FAULTS = [
    Fault("replica-kill", "SIGKILL one of two replicas of a critical stage", _kill_replica),
    Fault(
        "replica-stop", f"SIGSTOP one of two replicas of a critical stage for {FREEZE:.0f} s", _freeze("front.request")
    ),
    Fault("optional-frozen", STOP.format("an optional"), _freeze("opt.request")),
    Fault("critical-frozen", STOP.format("a critical"), _freeze("victim.request")),
    Fault("broker-restart", "SIGKILL the nats-server; `up` restarts it", _restart_broker),
    Fault("plugin-raise", f"{FAULT_REQUESTS} requests make the plugin raise", _plugin("raise")),
    Fault("plugin-hang", f"{FAULT_REQUESTS} requests make the plugin hang 3 s (limit 0.5 s)", _plugin("delay")),
    Fault("plugin-block", f"{FAULT_REQUESTS} requests block the plugin's event loop 3 s", _plugin("block")),
    Fault("plugin-leak", f"{FAULT_REQUESTS} requests leak 100 MB each (limit 400 MB)", _plugin("leak")),
    Fault("plugin-exit", f"{FAULT_REQUESTS} requests make the plugin's process exit", _plugin("exit")),
    Fault("cpu-spin", f"{FAULT_REQUESTS} requests spin 3 s of CPU each (budget 6 s)", _plugin("spin")),
    Fault("fd-leak", f"{FAULT_REQUESTS} requests leak 32 descriptors each (limit 128)", _plugin("fd-leak")),
]
BY_NAME = {fault.name: fault for fault in FAULTS}
