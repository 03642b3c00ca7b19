"""Changing a running API under ``backworks up`` with steady load: no request fails, each response is one revision's.

Revision ``n`` of the blueprint sets ``x-rev: n`` (a response enhancer) and the handler answers ``{"rev": n}``: a
response whose header and body disagree mixed two revisions. Revisions 4-7 add a route ``/news`` served by two added
instances; revision 8 removes them again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from backworks.applying import apply
from backworks.local.ports import free_port
from backworks.pipeline import blueprints
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy

pytestmark = pytest.mark.e2e

HELLO_WORKERS = 12
NEWS_WORKERS = 2
SWITCH_BOUND_S = 2.0
"""Requests started this long after ``apply`` returned must see the new revision (a generous bound)."""
NEWS_FROM, NEWS_UNTIL = 4, 8
"""Revisions that serve ``/news``: from 4 (added) up to, not including, 8 (removed)."""
LAST = 11
LIMIT_MS = 4000
"""Every stage's time limit: generous, as time limits are not the subject here. With the default 100 ms, a replica
started by an apply on a loaded machine once held its first request 318 ms and the stall watch failed it (504)."""


def blueprint(revision: int) -> str:
    limit = f"timeout_ms: {LIMIT_MS}"
    text = f"""name: reload
plugins:
  tag: {{type: response-headers, {limit}, config: {{set: {{x-rev: "{revision}"}}}}}}
"""
    if NEWS_FROM <= revision < NEWS_UNTIL:
        text += f"""  extra: {{type: response-headers, {limit}, config: {{set: {{x-news-rev: "{revision}"}}}}}}
"""
    text += f"""endpoints:
  hello: {{path: /hello, plugins: [tag], handler: {{type: mock, {limit}, config: {{body: {{rev: {revision}}}}}}}}}
"""
    if NEWS_FROM <= revision < NEWS_UNTIL:
        handler = f"{{type: mock, {limit}, config: {{body: {{rev: {revision}}}}}}}"
        text += f"""  news: {{path: /news, plugins: [extra], handler: {handler}}}
"""
    return text


@dataclass(frozen=True)
class Sample:
    route: str
    started: float
    status: int
    revision: int | None
    """The revision the response says served it (None: a 404, or not consistent)."""
    consistent: bool
    stamped: int | None = None
    """The revision the gateway stamped on the request (``x-backworks-revision``)."""


def sample(client: httpx.Client, route: str) -> Sample:
    started = time.monotonic()
    try:
        response = client.get(route)
    except httpx.HTTPError:
        return Sample(route, started, 0, None, False)
    if response.status_code != 200:
        return Sample(route, started, response.status_code, None, response.status_code == 404)
    header = response.headers.get("x-news-rev" if route == "/news" else "x-rev")
    body = response.json().get("rev")
    stamped = int(response.headers["x-backworks-revision"])
    return Sample(route, started, 200, body, header == str(body) == str(stamped), stamped)


class Load:
    """Threads sending requests back to back until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def worker(self, route: str) -> None:
        with httpx.Client(base_url=self.base, timeout=10.0) as client:
            while not self.stopping.is_set():
                result = sample(client, route)
                with self.lock:
                    self.samples.append(result)


def applied(path: Path, revision: int, nats: str) -> tuple[float, float, float]:
    """Write revision ``revision`` and run ``backworks apply``; returns when it started, when it returned, and the
    switch time it measured (from storing the revision to the fleet reporting it)."""
    path.write_text(blueprint(revision))
    began = time.monotonic()
    done = subprocess.run([BACKWORKS, "apply", str(path), "--nats", nats, "-m", f"rev {revision}", "--format", "json"],
                          capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["revision"] == revision and result["confirmed"], result
    return began, time.monotonic(), float(result["switch_s"])


@pytest.mark.timeout(400)
def test_ten_applies_under_steady_load_fail_no_request(tmp_path: Path) -> None:
    port, nats_port = free_port(), free_port()
    base, nats = f"http://127.0.0.1:{port}", f"nats://127.0.0.1:{nats_port}"
    path = tmp_path / "blueprint.yaml"
    path.write_text(blueprint(1))
    log = tmp_path / "up.log"
    up = start("up", str(path), "--port", str(port), "--nats-port", str(nats_port), log=log)
    load = Load(base)
    applies: dict[int, tuple[float, float]] = {}
    switches: dict[int, float] = {}
    try:
        wait_healthy(base, process=up, log=log)
        with ThreadPoolExecutor(HELLO_WORKERS + NEWS_WORKERS) as pool:
            workers = [pool.submit(load.worker, "/hello") for _ in range(HELLO_WORKERS)]
            workers += [pool.submit(load.worker, "/news") for _ in range(NEWS_WORKERS)]
            try:
                time.sleep(1.0)
                for revision in range(2, LAST + 1):
                    began, returned, switches[revision] = applied(path, revision, nats)
                    applies[revision] = began, returned
                    time.sleep(SWITCH_BOUND_S + 0.5)  # the last 0.5 s: requests that must see this revision
            finally:  # the workers stop before the pool waits for them, whatever happened
                load.stopping.set()
            for worker in workers:
                worker.result()
        history = subprocess.run([BACKWORKS, "history", "--nats", nats], capture_output=True, text=True, check=True)
    finally:
        load.stopping.set()
        stop(up, timeout=20)
    samples = sorted(load.samples, key=lambda s: s.started)
    hello = [s for s in samples if s.route == "/hello"]
    news = [s for s in samples if s.route == "/news"]
    failed = [s for s in hello if s.status != 200] + [s for s in news if s.status not in (200, 404)]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:5]}"
    mixed = [s for s in samples if not s.consistent]
    assert not mixed, f"responses mixing two revisions: {mixed[:5]}"
    assert len(history.stdout.strip().splitlines()) == LAST, history.stdout

    def expected(started: float) -> int:
        """The revision a request started at ``started`` must see, once the bound after each apply passed."""
        current = 1
        for revision, (_, returned) in sorted(applies.items()):
            if started > returned + SWITCH_BOUND_S:
                current = revision
        return current

    def settled(started: float) -> bool:
        """Not while an apply runs or within the bound after it: then either revision is right."""
        return all(not (began <= started <= returned + SWITCH_BOUND_S) for began, returned in applies.values())

    late = [s for s in hello if settled(s.started) and s.started > applies[2][1] and s.revision != expected(s.started)]
    when = {revision: (began - late[0].started, returned - late[0].started) for revision, (began, returned) in
            applies.items()} if late else {}  # fmt: skip
    assert not late, (
        f"requests started > {SWITCH_BOUND_S} s after apply returned saw an old revision: {late[:5]} {when}"
    )
    for s in news:
        if settled(s.started) and s.started > applies[2][1]:
            wanted = expected(s.started)
            serves = NEWS_FROM <= wanted < NEWS_UNTIL
            assert (s.status == 200 and s.revision == wanted) if serves else s.status == 404, (s, wanted)

    # Measured, reported (not asserted): how long apply took and when the first response of each revision started.
    duration = max(s.started for s in samples) - min(s.started for s in samples)
    report = [f"{len(samples)} requests in {duration:.1f} s ({len(samples) / duration:.0f} req/s), 0 failed"]
    for revision, (began, returned) in sorted(applies.items()):
        first = min((s.started for s in hello if s.revision == revision), default=float("nan"))
        last_old = max((s.started for s in hello if s.revision is not None and s.revision < revision), default=began)
        report.append(
            f"rev {revision}: switch {switches[revision]:.2f} s, apply command {returned - began:.2f} s; first new "
            f"response started {first - began:+.2f} s after apply began; last old one started "
            f"{last_old - returned:+.2f} s after it returned"
        )
    print("\n".join(report))
    (tmp_path / "measured.txt").write_text("\n".join(report))


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_fifty_applies_leave_gateway_and_replica_memory_flat(tmp_path: Path) -> None:
    port, nats_port = free_port(), free_port()
    base, nats = f"http://127.0.0.1:{port}", f"nats://127.0.0.1:{nats_port}"
    path = tmp_path / "blueprint.yaml"
    path.write_text(blueprint(1))
    log = tmp_path / "up.log"
    up = start("up", str(path), "--port", str(port), "--nats-port", str(nats_port), log=log)
    try:
        health = wait_healthy(base, process=up, log=log)
        (gateway,) = [p for p in psutil.Process(up.pid).children() if "backworks gateway" in " ".join(p.cmdline())]
        tag = psutil.Process(health["stages"]["tag.response"]["replicas"][0]["pid"])

        def run(revision: int) -> None:
            path.write_text(blueprint(1 if revision % 2 else 2).replace('x-rev: "', f'x-rev: "{revision}-'))
            loaded = blueprints.load(path)
            result = asyncio.run(apply([nats], loaded, f"memory {revision}"))
            assert result.confirmed, result.as_dict()
            with httpx.Client(base_url=base) as client:
                for _ in range(5):
                    assert client.get("/hello").status_code == 200

        for revision in range(2, 6):  # warm-up: caches, first builds
            run(revision)
        before = gateway.memory_info().rss, tag.memory_info().rss
        for revision in range(6, 56):
            run(revision)
        after = gateway.memory_info().rss, tag.memory_info().rss
    finally:
        stop(up, timeout=20)
    growth = [(b - a) / 2**20 for a, b in zip(before, after, strict=True)]
    report = (f"50 applies: gateway RSS {before[0] / 2**20:.1f} -> {after[0] / 2**20:.1f} MB, tag replica RSS "
              f"{before[1] / 2**20:.1f} -> {after[1] / 2**20:.1f} MB")  # fmt: skip
    print(report)
    (tmp_path / "measured.txt").write_text(report)
    assert growth[0] < 20 and growth[1] < 20, report
