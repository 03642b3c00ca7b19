"""The chaos run: ``backworks up`` on ops/chaos/chaos.yaml, then for each fault a bounded load with the fault
injected a quarter of the way in, until the stack answers in full again (or ``--recovery-timeout``).

Progress goes to stderr; the table to stdout; ``results.json``, ``table.txt`` and ``table.md`` to ``--output``.
Between faults the run waits until every stage has its replicas live and a request gets a full answer, so one
fault's aftermath is not charged to the next.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from backworks.local.ports import free_port
from backworks.local.processes import terminate
from ops.chaos import report
from ops.chaos.faults import BY_NAME, Fault
from ops.chaos.load import Load, summarize

CHAOS_DIR = Path(__file__).resolve().parent
ROOT = CHAOS_DIR.parents[1]
BLUEPRINT = CHAOS_DIR / "chaos.yaml"
DEFAULT_OUT = ROOT / "chaos-results"
DEFAULT_REQUESTS = 200
DEFAULT_THREADS = 4
RECOVERY_TIMEOUT = 60.0
"""Seconds after a fault's end the load goes on waiting for full answers before the fault counts as not recovered."""
STABLE = 20
"""Full answers in a row that end a fault's load once its request count is reached."""
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
REPLICAS = {"front.request": 2, "victim.request": 1, "opt.request": 1, "secure.response": 1, "api-handler.request": 1}
LEDGER_ENV = "BACKWORKS_CHAOS_LEDGER"


def progress(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Stack:
    """A running ``backworks up`` of the chaos blueprint."""

    def __init__(self, out: Path, blueprint: Path = BLUEPRINT, args: tuple[str, ...] = ()) -> None:
        """Start ``backworks up BLUEPRINT ARGS`` (its log, state and the handler's ledger under ``out``)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ledger = out / "ledger.txt"
        self.log = out / "up.log"
        environment = {
            **os.environ,
            "BACKWORKS_ALLOW_FAULT": "1",
            "BACKWORKS_STATE_DIR": str(out / "state"),
            "BACKWORKS_LOG_FORMAT": "json",
            LEDGER_ENV: str(self.ledger),
        }
        backworks = str(Path(sys.executable).parent / "backworks")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [backworks, "up", str(blueprint), "--port", str(self.port), *args],
                stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=out,
            )  # fmt: skip
        self.pids: set[int] = set()

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/_backworks/health", timeout=5).json()
        return body

    def replica_pids(self, stage: str) -> list[int]:
        """Pids of the replicas health lists for ``stage`` that are running (health lists a killed one until its
        last heartbeat expires)."""
        listed = [int(replica["pid"]) for replica in self.health()["stages"][stage]["replicas"]]
        return [pid for pid in listed if running(pid)]

    def broker(self) -> tuple[int, int]:
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if child.name() == "nats-server":
                ports = [c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
                client_port = min(ports)  # the client port; monitoring (if any) is configured above it
                return child.pid, client_port
        raise RuntimeError("no nats-server under `backworks up`")

    def settled(self, client: httpx.Client) -> bool:
        """Every stage has its replicas live and a request gets a full answer."""
        self.remember_pids()
        try:
            if any(len(self.replica_pids(stage)) < count for stage, count in REPLICAS.items()):
                return False
            response = client.get(f"{self.base}/api")
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return response.status_code == 200 and not response.headers.get("x-backworks-skipped")

    def wait_settled(self, timeout: float) -> float:
        started = time.monotonic()
        with httpx.Client(timeout=10) as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"`backworks up` exited ({self.process.returncode}); see {self.log}")
                if self.settled(client):
                    return time.monotonic() - started
                time.sleep(0.2)
        raise RuntimeError(f"the stack did not settle within {timeout:.0f} s; see {self.log}")

    def remember_pids(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.pids |= {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}

    def handled(self) -> Counter[str]:
        """How many times the handler answered each request id."""
        if not self.ledger.exists():
            return Counter()
        return Counter(line for line in self.ledger.read_text().splitlines() if line)

    def stop(self) -> list[int]:
        """Stop ``up`` and everything under it; returns the pids still running after (should be none)."""
        self.remember_pids()
        terminate([self.process], STOP_TIMEOUT)
        return [pid for pid in self.pids if running(pid)]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def run_fault(stack: Stack, fault: Fault, requests: int, threads: int, recovery_timeout: float) -> dict[str, Any]:
    load = Load(f"{stack.base}/api", threads)
    load.start()
    try:
        while load.normal_sent() < requests // 4:
            time.sleep(0.01)
        started = time.monotonic()
        progress(f"{fault.name}: {fault.description}")
        fault_end = fault.inject(stack, load)
        give_up = fault_end + recovery_timeout
        while time.monotonic() < give_up and not (
            load.normal_sent() >= requests and load.recent_full(STABLE, fault_end)
        ):
            time.sleep(0.02)
    finally:
        load.stop()
    time.sleep(0.5)  # a handler's ledger line written just before its answer
    figures = summarize(load.outcomes, fault_end, stack.handled())
    row = {"fault": fault.name, "description": fault.description, **figures}
    row["fault_duration_s"] = round(fault_end - started, 3)
    progress(
        f"{fault.name}: sent {row['sent']}, answered {row['answered']}, degraded {row['degraded']}, "
        f"lost {row['lost']}, duplicated {row['duplicated']}, recovery {row['recovery_s']} s"
    )
    return row


def environment() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-fault", type=int, default=DEFAULT_REQUESTS, help="normal requests per fault")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="client threads sending requests")
    parser.add_argument("--faults", default=None, help="comma-separated, in order (default: every fault)")
    parser.add_argument(
        "--cluster", action="store_true",
        help="run the cluster faults against `up --nats` on a 3-node loopback cluster with R3 streams",
    )  # fmt: skip
    parser.add_argument(
        "--deadline-ms", type=int, default=None,
        help="with --cluster: the requests' deadline instead of the blueprint's 5000 ms (e.g. longer than a "
        "JetStream election, 4-9 s)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="directory (default: chaos-results/<time>)")
    parser.add_argument("--recovery-timeout", type=float, default=RECOVERY_TIMEOUT, help="seconds (see module doc)")
    options = parser.parse_args(argv)
    from ops.chaos import cluster  # it builds on this module's Stack

    if options.deadline_ms is not None and not options.cluster:
        parser.error("--deadline-ms applies to the cluster run only (--cluster)")
    known = cluster.BY_NAME if options.cluster else BY_NAME
    options.faults = options.faults or ",".join(known)
    unknown = [name for name in options.faults.split(",") if name not in known]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    from ops.chaos import cluster  # it builds on this module's Stack

    out: Path = options.output or DEFAULT_OUT / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    faults = [(cluster.BY_NAME if options.cluster else BY_NAME)[name] for name in options.faults.split(",")]
    results: dict[str, Any] = {"environment": environment(), "blueprint": BLUEPRINT.read_text(), "faults": []}
    results["options"] = {
        "requests_per_fault": options.requests_per_fault, "threads": options.threads, "cluster": options.cluster,
        "deadline_ms": options.deadline_ms,
    }  # fmt: skip
    progress(f"starting `backworks up` ({out / 'up.log'})" + (" on a 3-node cluster" if options.cluster else ""))
    stack = cluster.ClusterStack(out, options.deadline_ms) if options.cluster else Stack(out)
    try:
        progress(f"ready after {stack.wait_settled(READY_TIMEOUT):.1f} s")
        for fault in faults:
            row = run_fault(stack, fault, options.requests_per_fault, options.threads, options.recovery_timeout)
            row["settled_after_s"] = round(stack.wait_settled(READY_TIMEOUT), 3)
            results["faults"].append(row)
    except RuntimeError as exc:  # the stack did not come up or settle: the faults run so far are still reported
        results["error"] = str(exc)
        progress(f"stopped early: {exc}")
    finally:
        left = stack.stop()
    results["left_running"] = left
    results["environment"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report.table(results)
    report.write(results, table, out)
    report.show(table)
    progress(f"results in {out}")
    clean = all(row["lost"] == 0 and row["duplicated"] == 0 for row in results["faults"])
    return 0 if clean and not left and "error" not in results else 1
