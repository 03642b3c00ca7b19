"""The chaos report's cluster faults (``python ops/chaos/run.py --cluster``): the same stack, on three nodes.

``backworks up --nats <seeds>`` runs ops/chaos/chaos.yaml (with ``nats: {replicas: 3}``: every stream and bucket
at R3) against a 3-node nats-server cluster on loopback (``LocalCluster``, what ``backworks nats --cluster 3``
runs). Under the same steady load as the single-node faults:

- ``leader-kill``: SIGKILL the node leading ``BW_PIPELINE``; after ``DOWN_FOR`` it is started again and the run
  waits for every stream to be current (its row covers the election and the node's return);
- ``node-partition``: SIGSTOP the node leading ``BW_PIPELINE`` for ``PARTITION`` s, then SIGCONT;
- ``rolling-restart``: restart each node in turn the documented way: its stream and consumer leaders moved off it
  first (``backworks nats stepdown``), then stopped (SIGTERM) and started, and the cluster current before the next.

Each row's "failures over" is the time from the first to the last request that did not get a 200.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from backworks.contracts.names import PIPELINE_STREAM
from backworks.local.cluster import LocalCluster
from backworks.local.state import STATE_DIR_ENV
from ops.chaos.faults import Fault, Stack
from ops.chaos.load import Load
from ops.chaos.runner import BLUEPRINT, CHAOS_DIR
from ops.chaos.runner import Stack as SingleNodeStack

NODES = 3
DOWN_FOR = 8.0
"""Seconds the killed leader stays down before it is started again."""
PARTITION = 10.0
"""Seconds a node stays stopped (SIGSTOP): partitioned, as the others see it."""
CURRENT_TIMEOUT = 60.0
DEFAULTS_LINE = "defaults: {timeout_ms: 5000}"
"""The chaos blueprint's request deadline, as written in ops/chaos/chaos.yaml (``--deadline-ms`` replaces it)."""


def with_deadline(blueprint: str, deadline_ms: int | None) -> str:
    """The chaos blueprint with ``deadline_ms`` as its requests' deadline (None: as it is)."""
    if deadline_ms is None:
        return blueprint
    if DEFAULTS_LINE not in blueprint:
        raise ValueError(f"ops/chaos/chaos.yaml no longer says {DEFAULTS_LINE!r}: update DEFAULTS_LINE")
    return blueprint.replace(DEFAULTS_LINE, f"defaults: {{timeout_ms: {deadline_ms}}}")


class ClusterStack(SingleNodeStack):
    """The chaos stack under ``up --nats <seeds>`` on a 3-node loopback cluster (R3 streams and buckets)."""

    def __init__(self, out: Path, deadline_ms: int | None = None) -> None:
        """``deadline_ms``: the requests' deadline instead of the blueprint's ``defaults.timeout_ms``."""
        state = out / "state"
        os.environ[STATE_DIR_ENV] = str(state)  # the cluster trusts the keyring there; `up`'s services admit to it
        self.cluster = LocalCluster(out / "cluster", NODES).start()
        blueprint = out / "chaos-cluster.yaml"
        text = with_deadline(BLUEPRINT.read_text(), deadline_ms)
        blueprint.write_text(text + "nats: {replicas: 3}\n")
        shutil.copy(CHAOS_DIR / "chaos_handler.py", out / "chaos_handler.py")  # beside the blueprint, as in ops/chaos
        super().__init__(out, blueprint, ("--nats", ",".join(self.cluster.seeds)))

    def leader(self) -> int:
        """The node leading ``BW_PIPELINE`` (asked through ``backworks nats status``, as an operator would)."""
        backworks = str(Path(sys.executable).parent / "backworks")
        command = [backworks, "nats", "status", "--format", "json", "--nats", ",".join(self.cluster.seeds)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        name = next(item["leader"] for item in json.loads(done.stdout) if item["name"] == PIPELINE_STREAM)
        return self.cluster.index_of(name)

    def stop(self) -> list[int]:
        try:
            return super().stop()
        finally:
            self.cluster.stop()


def _cluster(stack: Stack) -> ClusterStack:
    if not isinstance(stack, ClusterStack):
        raise TypeError("a cluster fault needs the cluster stack (run.py --cluster)")
    return stack


def _kill_leader(stack: Stack, load: Load) -> float:
    target = _cluster(stack)
    victim = target.leader()
    target.cluster.kill(victim)
    killed = time.monotonic()
    time.sleep(DOWN_FOR)
    target.cluster.restart(victim)
    target.cluster.wait_current(CURRENT_TIMEOUT)
    return killed


def _partition(stack: Stack, load: Load) -> float:
    target = _cluster(stack)
    victim = target.leader()
    target.cluster.pause(victim)
    try:
        time.sleep(PARTITION)
    finally:
        target.cluster.resume(victim)
    return time.monotonic()


def _rolling_restart(stack: Stack, load: Load) -> float:
    target = _cluster(stack)
    for index in range(len(target.cluster.nodes)):
        target.cluster.restart(index)  # leaders moved off it, SIGTERM, then it starts on its store again
        target.cluster.wait_current(CURRENT_TIMEOUT)  # the procedure: the cluster current before the next node
    return time.monotonic()


FAULTS = [
    Fault("leader-kill", f"SIGKILL the node leading {PIPELINE_STREAM}; back after {DOWN_FOR:.0f} s", _kill_leader),
    Fault("node-partition", f"SIGSTOP the node leading {PIPELINE_STREAM} for {PARTITION:.0f} s", _partition),
    Fault(
        "rolling-restart",
        "restart each node in turn (its leaders moved off first), the cluster current between",
        _rolling_restart,
    ),
]
BY_NAME = {fault.name: fault for fault in FAULTS}
