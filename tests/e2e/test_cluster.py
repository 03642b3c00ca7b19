"""A 3-node NATS cluster under steady traffic: the stream leader killed, a node partitioned, a rolling restart.

Real processes throughout: three routed nats-server nodes, ``backworks declare`` at R3, the gateway and
two stage processes connected with the seed list, HTTP clients that give every request its own id. A
recording handler appends each request id it runs to a file, so a handler run twice for one request
would show. The measured figures (the window in which requests failed) go to the chaos report; the
assertions are generous bounds.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from backworks.contracts.names import PIPELINE_STREAM
from backworks.local.cluster import LocalCluster
from backworks.local.ports import free_port
from tests.e2e.chaos import report
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy
from tests.files import write_blueprint
from tests.samples import write_plugin_file

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

LEDGER = '''
from pydantic import BaseModel, ConfigDict

from backworks import Action, Envelope, Handler, HttpResponse, Respond


class LedgerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str


class Ledger(Handler[LedgerConfig]):
    """Answers 200 and appends the request id to a file: one line per run."""

    name = "ledger"
    version = "1.0.0"
    description = "Records every request it handles."
    Config = LedgerConfig

    async def handle(self, envelope: Envelope) -> Action:
        with open(self.config.file, "a") as ledger:
            ledger.write(envelope.request_id + "\\n")
        return Respond(HttpResponse(status=200, body=b"recorded"))
'''

BLUEPRINT = """
name: cluster-api
nats: {{url: "{seeds}", replicas: 3}}
plugin_dirs: [local]
defaults: {{timeout_ms: 10000}}
plugins:
  stamp: {{type: request-headers, config: {{set: {{x-stamped: "yes"}}}}}}
endpoints:
  ledger:
    path: /ledger/{{name}}
    methods: [GET]
    plugins: [stamp]
    handler: {{type: ledger, config: {{file: "{ledger}"}}}}
"""

WINDOW_BOUND = 15.0
"""Generous bound on the window of failed requests (the issue's goal, 2 s, is measured and reported)."""


@dataclass
class Traffic:
    """Clients sending requests back to back, each with its own id; every outcome kept with its time."""

    base: str
    outcomes: dict[str, tuple[float, int | str]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int = 3) -> None:
        for _ in range(clients):
            thread = threading.Thread(target=self._send, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _send(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.is_set():
                request_id = uuid.uuid4().hex
                outcome: int | str
                try:
                    response = client.get(f"{self.base}/ledger/x", headers={"x-request-id": request_id})
                    assert response.headers["x-request-id"] == request_id
                    outcome = response.status_code
                except Exception as exc:
                    outcome = repr(exc)
                self.outcomes[request_id] = (time.monotonic(), outcome)
                time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def failed_window(self) -> tuple[int, float]:
        """How many requests did not get a 200, and the time from the first of them to the last."""
        failed = [at for at, outcome in self.outcomes.values() if outcome != 200]
        return len(failed), (max(failed) - min(failed)) if failed else 0.0


@dataclass
class Deployment:
    cluster: LocalCluster
    base: str
    ledger: Path
    services: list[subprocess.Popen[bytes]]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    log = tmp_path / "services.log"
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    port = free_port()
    services: list[subprocess.Popen[bytes]] = []
    with LocalCluster(tmp_path / "cluster", 3) as cluster:
        seeds = ",".join(cluster.seeds)
        write_plugin_file(tmp_path, "ledger.py", LEDGER)
        blueprint = write_blueprint(tmp_path, BLUEPRINT.format(seeds=seeds, ledger=ledger))
        declared = subprocess.run([BACKWORKS, "declare", str(blueprint)], capture_output=True, timeout=60)
        assert declared.returncode == 0, declared.stderr
        try:
            for instance in ("stamp", "ledger-handler"):
                services.append(start("serve", instance, str(blueprint), log=log))
            services.append(start("gateway", str(blueprint), "--port", str(port), log=log))
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, process=services[-1], log=log)
            yield Deployment(cluster, base, ledger, services)
            for process in services:
                assert process.poll() is None, f"a service exited: {process.args!r}\n{log.read_text()[-3000:]}"
        finally:
            for process in services:
                stop(process)


def pipeline_leader(deployment: Deployment) -> str:
    body = httpx.get(f"{deployment.base}/_backworks/health", timeout=5)
    assert body.status_code == 200
    result = subprocess.run(
        [BACKWORKS, "nats", "status", "--format", "json", "--nats",
         ",".join(deployment.cluster.seeds)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    leader = next(item["leader"] for item in json.loads(result.stdout) if item["name"] == PIPELINE_STREAM)
    assert isinstance(leader, str)
    return leader


def run_fault(deployment: Deployment, fault: Callable[[], None], settle: float = 8.0) -> Traffic:
    traffic = Traffic(deployment.base)
    traffic.start()
    try:
        time.sleep(2.0)
        fault()
        time.sleep(settle)
    finally:
        traffic.stop()
    return traffic


def check_exactly_once(deployment: Deployment, traffic: Traffic) -> None:
    unanswered = {rid: o for rid, (_, o) in traffic.outcomes.items() if isinstance(o, str)}
    assert not unanswered, f"requests without an HTTP response: {list(unanswered.items())[:5]}"
    runs = Counter(deployment.ledger.read_text().split())
    twice = {rid: n for rid, n in runs.items() if n > 1}
    assert not twice, f"the handler ran more than once for {len(twice)} request(s)"
    ok = {rid for rid, (_, outcome) in traffic.outcomes.items() if outcome == 200}
    assert ok <= set(runs), "every 200 was produced by one handler run"
    assert len(ok) > 50, "the traffic really flowed"


def test_killing_the_pipeline_stream_leader_fails_requests_only_during_the_election(
    deployment: Deployment, tmp_path: Path
) -> None:
    leader = pipeline_leader(deployment)
    victim = deployment.cluster.index_of(leader)
    traffic = run_fault(deployment, lambda: deployment.cluster.kill(victim))
    failed, window = traffic.failed_window()
    check_exactly_once(deployment, traffic)
    after = httpx.get(f"{deployment.base}/ledger/after", timeout=15)
    assert after.status_code == 200
    assert window <= WINDOW_BOUND, f"{failed} requests failed over {window:.2f} s"
    report(
        tmp_path, "cluster_leader_killed", failed_requests=failed, failure_window=window,
        requests=len(traffic.outcomes),
    )  # fmt: skip


def test_a_partitioned_node_costs_no_request_once_it_resumes(deployment: Deployment, tmp_path: Path) -> None:
    leader = pipeline_leader(deployment)
    victim = deployment.cluster.index_of(leader)

    def partition() -> None:
        deployment.cluster.pause(victim)
        time.sleep(10.0)
        deployment.cluster.resume(victim)

    traffic = run_fault(deployment, partition)
    failed, window = traffic.failed_window()
    check_exactly_once(deployment, traffic)
    assert window <= WINDOW_BOUND, f"{failed} requests failed over {window:.2f} s"
    report(
        tmp_path, "cluster_node_partitioned_10s", failed_requests=failed, failure_window=window,
        requests=len(traffic.outcomes),
    )  # fmt: skip


def test_a_rolling_restart_waiting_for_the_cluster_to_be_current_loses_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    def rolling() -> None:
        for index in range(len(deployment.cluster.nodes)):
            deployment.cluster.restart(index)  # its leaders moved off first (stepdown), SIGTERM, then start again
            deployment.cluster.wait_current(timeout=60)  # the documented procedure: wait, then the next node

    traffic = run_fault(deployment, rolling, settle=3.0)
    failed, window = traffic.failed_window()
    check_exactly_once(deployment, traffic)
    report(
        tmp_path, "cluster_rolling_restart", failed_requests=failed, failure_window=window,
        requests=len(traffic.outcomes),
    )  # fmt: skip
