"""The audit trail under ``backworks up``: real processes, a generated load with failures injected.

Every event on ``BW_EVENTS`` ends as exactly one verified record, a restarted subscriber adds nothing, a second
one started later backfills the whole stream, and a tampered record is named by ``audit verify``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client.parser import text_string_to_metric_families

from backworks.contracts.names import EVENTS_STREAM
from backworks.local.ports import free_port
from backworks.pipeline import broker
from backworks.pipeline.nats_auth import NatsAuth, keyring
from backworks.pipeline.permissions import ADMIN, TAP
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

KEY = "alice-key-0123456789abcdef"
REQUESTS = 300
CONCURRENCY = 16
BLUEPRINT = f"""
name: tapped
plugins:
  keys:
    type: api-key
    config: {{keys: [{{consumer: alice, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}}}]}}
  chaos: {{type: fault, critical: true, config: {{abort_status: 418}}}}
endpoints:
  notes:
    path: /notes
    methods: [GET]
    plugins: [keys, chaos]
    handler: {{type: mock, config: {{body: {{ok: true}}}}}}
  open:
    path: /open
    plugins: [chaos]
    handler: {{type: mock, config: {{body: {{ok: true}}}}}}
"""


@dataclass
class Deployment:
    folder: Path
    blueprint: Path
    base: str
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BACKWORKS, *args], capture_output=True, text=True, env=self.env, cwd=self.folder, timeout=60, check=False
        )

    def nats_url(self) -> str:
        return (self.folder / "state" / "nats.url").read_text().strip()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("tap")
    blueprint = folder / "blueprint.yaml"
    blueprint.write_text(BLUEPRINT)
    port = free_port()
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(folder / "state"), "BACKWORKS_ALLOW_FAULT": "1"}
    log = folder / "up.log"
    up = start("up", str(blueprint), "--port", str(port), log=log, cwd=folder, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=up, log=log)
        yield Deployment(folder, blueprint, base, env)
    finally:
        stop(up, timeout=15)


async def load(base: str) -> Counter[str]:
    """``REQUESTS`` requests: successes, 401s (no key), 418s (aborted) and 500s (a raising stage)."""
    sent: Counter[str] = Counter()
    plans = []
    for number in range(REQUESTS):
        fault = ("none", "none", "abort", "raise")[number % 4]
        path = "/notes" if number % 3 else "/open"
        headers = {"x-backworks-fault": fault}
        if path == "/notes" and number % 5:
            headers["x-api-key"] = KEY
        plans.append((path, headers))
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def one(path: str, headers: dict[str, str]) -> None:
            async with limit:
                response = await http.get(path, headers=headers)
            sent[f"{response.status_code // 100}xx"] += 1

        await asyncio.gather(*(one(path, headers) for path, headers in plans))
    return sent


async def stream_count(url: str, state: Path) -> int:
    admin = NatsAuth(ADMIN, "test", nkey_seed_file=str(keyring(state).seed_file(ADMIN)))
    client = await broker.connect([url], name="test-tap", auth=admin)
    try:
        info = await client.jetstream().stream_info(EVENTS_STREAM)
        return int(info.state.messages)
    finally:
        await client.close()


def records(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def settled(deployment: Deployment, store: Path) -> int:
    """Wait until the store holds as many records as the stream holds events, and that count is stable."""
    last = {"count": -1}

    async def caught_up() -> bool:
        events = await stream_count(deployment.nats_url(), deployment.folder / "state")
        held = records(store)
        same = events == held == last["count"]
        last["count"] = events if events == held else -1
        return same

    asyncio.run(eventually(caught_up, timeout=60, interval=1.0))
    return last["count"]


@dataclass
class Traffic:
    deployment: Deployment
    sent: Counter[str]
    analytics: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def traffic(deployment: Deployment) -> Iterator[Traffic]:
    """The load, sent while the first audit subscriber and the analytics service run."""
    folder, env = deployment.folder, deployment.env
    analytics = start("analytics", "serve", str(deployment.blueprint), log=folder / "analytics.log", cwd=folder,
                      env=env)  # fmt: skip
    first = start("audit", "serve", str(deployment.blueprint), log=folder / "audit1.log", cwd=folder, env=env)
    try:
        sent = asyncio.run(load(deployment.base))
        settled(deployment, folder / "state" / "audit.sqlite3")
    finally:
        stop(first)
    try:
        yield Traffic(deployment, sent, analytics)
    finally:
        stop(analytics)


def test_every_event_is_one_verified_record_across_restarts_and_a_late_second_subscriber(traffic: Traffic) -> None:
    deployment, sent = traffic.deployment, traffic.sent
    store = deployment.folder / "state" / "audit.sqlite3"
    assert set(sent) == {"2xx", "4xx", "5xx"}, sent
    total = records(store)
    assert total >= REQUESTS * 2  # at least received and responded per request that reached the pipeline
    verified = deployment.cli("audit", "verify", str(deployment.blueprint), "--format", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["verified"] == total

    responded = deployment.cli("audit", "query", str(deployment.blueprint), "--since", "10m", "--format", "json")
    found = [r for r in json.loads(responded.stdout) if r["subject"] == "bw.evt.request.responded"]
    assert Counter(f"{r['event']['status'] // 100}xx" for r in found) == sent
    alice = deployment.cli("audit", "query", str(deployment.blueprint), "--route", "notes", "--status", "2xx",
                           "--consumer", "alice", "--format", "json")  # fmt: skip
    assert json.loads(alice.stdout), alice.stdout + alice.stderr
    assert {r["event"]["consumer"] for r in json.loads(alice.stdout)} == {"alice"}

    # Restarted on the same store: resumes, adds nothing.
    again = start("audit", "serve", str(deployment.blueprint), log=deployment.folder / "audit2.log",
                  cwd=deployment.folder, env=deployment.env)  # fmt: skip
    # A second store, started late: its own durable consumer reads the stream from the start.
    second_blueprint = deployment.folder / "second.yaml"
    second_blueprint.write_text(BLUEPRINT + "audit: {store: second.sqlite3}\n")
    second_store = deployment.folder / "second.sqlite3"
    late = start("audit", "serve", str(second_blueprint), log=deployment.folder / "audit3.log",
                 cwd=deployment.folder, env=deployment.env)  # fmt: skip
    try:
        assert settled(deployment, second_store) == total
        assert records(store) == total
    finally:
        stop(late)
        stop(again)
    assert deployment.cli("audit", "verify", str(second_blueprint)).returncode == 0

    with sqlite3.connect(store) as db:
        seq, event_id = db.execute("SELECT seq, event_id FROM records ORDER BY seq LIMIT 1 OFFSET 41").fetchone()
        db.execute("UPDATE records SET event = replace(event, '\"route\":', '\"route\" :') WHERE seq = ?", (seq,))
    broken = deployment.cli("audit", "verify", str(deployment.blueprint))
    assert broken.returncode == 1
    assert f"record {seq} (event {event_id})" in broken.stdout


def test_the_report_counts_equal_the_requests_sent_by_status_class(traffic: Traffic) -> None:
    deployment, sent = traffic.deployment, traffic.sent

    def counted(report: dict[str, Any]) -> Counter[str]:
        total: Counter[str] = Counter()
        for row in report["endpoints"].values():
            total.update(row["statuses"])
        return total

    def report() -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(f"{deployment.base}/_backworks/report?since=15m", timeout=5).json()
        return found

    asyncio.run(eventually(lambda: "endpoints" in report() and counted(report()) == sent, timeout=30, interval=0.5))
    body = report()
    notes = body["endpoints"]["notes"]
    assert notes["count"] == sum(notes["statuses"].values())
    assert notes["error_rate"] == round(notes["statuses"].get("5xx", 0) / notes["count"], 4)
    assert 0 < notes["p50_ms"] <= notes["p95_ms"] <= notes["p99_ms"]
    assert body["consumers"]["alice"]["count"] > 0
    assert body["instances"]["chaos"]["failures"].get("error", 0) > 0
    cli = deployment.cli("report", "--since", "15m", "--format", "json", "--nats", deployment.nats_url())
    assert cli.returncode == 0, cli.stderr
    assert counted(json.loads(cli.stdout)) == sent
    text = deployment.cli("report", "--nats", deployment.nats_url())
    assert "notes" in text.stdout and "p99 ms" in text.stdout
    metrics: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{deployment.base}/_backworks/metrics").text):
        for sample in family.samples:
            if sample.name == "backworks_requests_total":
                metrics[sample.labels["status"]] += int(sample.value)
    assert metrics == sent, "the gateway's Prometheus counters agree with the report"


def test_the_subscribers_tap_identity_is_refused_the_pipeline_under_up(traffic: Traffic) -> None:
    """The identity audit and analytics ran as above (``up``'s keyring) may not feed a stage or forge an event."""
    deployment = traffic.deployment

    async def attempt() -> list[str]:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        tap = NatsAuth(TAP, "test", nkey_seed_file=str(keyring(deployment.folder / "state").seed_file(TAP)))
        client = await nats.connect(servers=[deployment.nats_url()], error_cb=on_error, **tap.options())
        try:
            js = client.jetstream(timeout=1)
            for subject in ("bw.stage.chaos.request", "bw.evt.request.responded"):
                with pytest.raises(NatsTimeout):  # refused: never stored, so no acknowledgement comes
                    await js.publish(subject, b"{}")
            await eventually(lambda: sum("permissions violation" in e.lower() for e in errors) >= 2)
        finally:
            await client.close()
        return errors

    assert asyncio.run(attempt())
