"""Co-located stages under a real ``backworks up``: three cheap stages of a four-stage chain in one process."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.chaos import report, running, wait_for
from tests.e2e.processes import BACKWORKS
from tests.e2e.test_cluster import LEDGER
from tests.files import write_blueprint
from tests.samples import write_plugin_file

pytestmark = [pytest.mark.e2e]

# stamp -> tag (a 30 ms wait, so the group is busy mid-group) -> ledger (its own process) -> secure: the three
# cheap stages are co-located, two replicas of the group (stamp asks for 2); the handler records each run in a
# file, so a second run of a request shows.
BLUEPRINT = """name: coloc
plugin_dirs: [local]
defaults: {{timeout_ms: 10000}}
plugins:
  stamp:  {{type: request-headers, colocate: cheap, replicas: 2, config: {{set: {{x-stamped: "yes"}}}}}}
  tag:    {{type: delay, colocate: cheap, timeout_ms: 1000, config: {{ms: 30}}}}
  secure: {{type: response-headers, colocate: cheap, config: {{set: {{x-content-type-options: nosniff}}}}}}
endpoints:
  ledger:
    path: /ledger/{{name}}
    plugins: [stamp, tag, secure]
    handler: {{type: ledger, config: {{file: "{ledger}"}}}}
"""
CHAIN = ["stamp.request", "tag.request", "ledger-handler.request", "secure.response"]
CLIENTS = 4


def write(tmp_path: Path) -> tuple[Path, Path]:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    write_plugin_file(tmp_path, "ledger.py", LEDGER)
    return write_blueprint(tmp_path, BLUEPRINT.format(ledger=ledger)), ledger


def test_a_co_located_group_serves_its_stages_in_one_process_beside_an_isolated_one(tmp_path: Path) -> None:
    blueprint, ledger = write(tmp_path)
    with running(blueprint, tmp_path) as stack:
        response = stack.request("/ledger/x")
        assert response.status_code == 200 and response.text == "recorded"
        assert response.headers["x-content-type-options"] == "nosniff"
        timing = [entry.split(";")[0].strip() for entry in response.headers["server-timing"].split(",")]
        assert timing == [*CHAIN, "total"]
        health = stack.health()
        pids = {stage: {r["pid"] for r in item["replicas"]} for stage, item in health["stages"].items()}
        assert pids["stamp.request"] == pids["tag.request"] == pids["secure.response"], "each process serves all three"
        assert pids["ledger-handler.request"].isdisjoint(pids["stamp.request"])
        assert health["groups"] == {"cheap": ["stamp", "tag", "secure"]}
        assert health["stages"]["tag.request"]["colocate"] == "cheap"
        assert len(pids["stamp.request"]) == 2, "two replicas of the group (stamp asks for 2)"
        for pid in pids["stamp.request"]:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert f"serve cheap {blueprint}" in command, "the group is the CLI command a user would run"
        order = subprocess.run([BACKWORKS, "plugins", "order", str(blueprint)], capture_output=True, text=True)
        assert "stamp.request [cheap] -> tag.request [cheap] -> ledger-handler.request -> secure.response [cheap]" in (
            order.stdout
        ), order.stdout
    assert ledger.read_text().split() == [response.headers["x-request-id"]]


class Traffic:
    """Clients sending requests back to back, each with its own request id; every outcome kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.outcomes: dict[str, int | str] = {}
        self.skipped: dict[str, str] = {}
        """Requests answered without some stage (``x-backworks-skipped``)."""
        self.took: dict[str, float] = {}
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def _send(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.is_set():
                request_id = uuid.uuid4().hex
                started = time.monotonic()
                try:
                    response = client.get(f"{self.base}/ledger/x", headers={"x-request-id": request_id})
                    assert response.headers["x-request-id"] == request_id
                    self.outcomes[request_id] = response.status_code
                    self.took[request_id] = time.monotonic() - started
                    if skipped := response.headers.get("x-backworks-skipped"):
                        self.skipped[request_id] = skipped
                except Exception as exc:
                    self.outcomes[request_id] = repr(exc)


@pytest.mark.chaos
def test_killing_the_group_mid_group_under_load_answers_every_request_once_and_runs_no_handler_twice(
    tmp_path: Path,
) -> None:
    blueprint, ledger = write(tmp_path)
    with running(blueprint, tmp_path) as stack:
        with Traffic(stack.base) as traffic:
            time.sleep(2.0)
            busy = wait_for(lambda: [r for r in stack.replicas("stamp.request") if r["inflight"]], timeout=10)
            victim = busy[0]["pid"]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)  # mid-group: envelopes taken from stamp's durable, not yet handed on
            back = wait_for(lambda: len([r for r in stack.replicas("tag.request") if r["pid"] != victim]) == 2)
            restarted_after = time.monotonic() - killed_at  # `up` restarted the group
            time.sleep(2.0)  # traffic through the restarted group
        after = stack.request("/ledger/after")
        timing = [entry.split(";")[0].strip() for entry in after.headers["server-timing"].split(",")]
    unanswered = {rid: outcome for rid, outcome in traffic.outcomes.items() if isinstance(outcome, str)}
    assert not unanswered, f"requests without an HTTP response: {list(unanswered.items())[:5]}"
    statuses = Counter(traffic.outcomes.values())
    assert set(statuses) == {200}, statuses
    runs = Counter(ledger.read_text().split())
    assert not {rid: n for rid, n in runs.items() if n > 1}, "no handler ran twice"
    assert set(traffic.outcomes) <= set(runs), "every answer came from one handler run"
    assert len(traffic.outcomes) > 50, "the traffic really flowed"
    assert back and timing == [*CHAIN, "total"], "the restarted group serves every co-located stage again"
    full_and_slow = [rid for rid, took in traffic.took.items() if took > 0.9 and rid not in traffic.skipped]
    report(
        tmp_path, "colocated_group_killed_mid_group", requests=len(traffic.outcomes),
        answered_without_a_stage=len(traffic.skipped), slowest_answer=max(traffic.took.values()),
        full_chain_answers_after_redelivery=len(full_and_slow), group_restarted_after=restarted_after,
    )  # fmt: skip
