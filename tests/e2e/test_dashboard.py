"""The live dashboard in a real headless browser (Debian's ``chromium``, driven by Playwright), under ``backworks
up`` with the analytics service: after a load with failures, the page shows by itself the report's numbers (which
equal the requests sent, by status class), every stage with its live replicas, the last requests with their stage
timelines; it follows new traffic without a reload, and says so when the analytics service or the gateway goes.

Never skipped: without ``chromium`` the test fails and says how to install it (``.ci/run`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

BLUEPRINT = """
name: watched
plugins:
  stamp: {type: request-headers, replicas: 2, config: {set: {x-stamped: "yes"}}}
endpoints:
  hello:
    path: /hello
    methods: [GET]
    plugins: [stamp]
    handler: {type: mock, config: {body: {ok: true}}}
  broken:
    path: /broken
    methods: [GET]
    handler: {type: mock, config: {status: 500, body: {error: down}}}
  missing:
    path: /missing
    methods: [GET]
    handler: {type: mock, config: {status: 404, body: {error: none}}}
"""
PLAN = {"/hello": 100, "/broken": 30, "/missing": 20}
REPLICAS = {"stamp.request": 2, "hello-handler.request": 1, "broken-handler.request": 1,
            "missing-handler.request": 1}  # fmt: skip
"""Each stage's live replicas under ``BLUEPRINT`` (``replicas: 2`` for stamp)."""
CONCURRENCY = 8
PAGE_WAIT_MS = 30_000
"""How long the page may take to show a change: a bound for a loaded machine (it refreshes every 2 s)."""
SHOWN_REQUESTS = 20
"""The page's ``SHOWN_REQUESTS``: the newest requests it lists."""
INSTALL_HINT = "the dashboard test needs Debian's chromium: apt-get install -y chromium (.ci/run installs it)"
ROUTE_FIELDS = ("count", "2xx", "4xx", "5xx", "error_rate", "p50_ms", "p95_ms", "p99_ms")

T = TypeVar("T")
READ_PAGE = """() => {
  const values = (row) => Object.fromEntries([...row.querySelectorAll("td[data-field]")]
    .map((td) => [td.dataset.field, {value: td.dataset.value, text: td.textContent}]));
  return {
    state: document.getElementById("status").dataset.state,
    status: document.getElementById("status").textContent,
    refreshes: Number(document.body.dataset.refreshes),
    routes: Object.fromEntries([...document.querySelectorAll("#routes tr[data-route]")]
      .map((row) => [row.dataset.route, values(row)])),
    stages: Object.fromEntries([...document.querySelectorAll("#stages tr[data-stage]")]
      .map((row) => [row.dataset.stage, values(row)])),
    recent: [...document.querySelectorAll("#recent li[data-request-id]")].map((item) => ({
      request_id: item.dataset.requestId,
      status: item.querySelector("[data-field=status]").textContent,
      stages: [...item.querySelectorAll(".segment[data-stage]")]
        .map((s) => ({stage: s.dataset.stage, ms: Number(s.dataset.ms)})),
    })),
    empty: document.getElementById("routes-empty").textContent,
  };
}"""


@dataclass
class Stack:
    base: str
    folder: Path
    blueprint: Path
    env: dict[str, str]
    up: Any
    analytics: Any


@contextlib.contextmanager
def deployed(folder: Path, text: str, *, analytics: bool) -> Iterator[Stack]:
    """``backworks up`` on ``text`` (and ``backworks analytics serve`` when asked), stopped on exit."""
    blueprint = folder / "blueprint.yaml"
    blueprint.write_text(text)
    port = free_port()
    env = {**os.environ, "BACKWORKS_STATE_DIR": str(folder / "state")}
    log = folder / "up.log"
    up = start("up", str(blueprint), "--port", str(port), log=log, cwd=folder, env=env)
    tap = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=up, log=log)
        if analytics:
            tap = start("analytics", "serve", str(blueprint), log=folder / "analytics.log", cwd=folder, env=env)
        yield Stack(base, folder, blueprint, env, up, tap)
    finally:
        if tap is not None:
            stop(tap)
        stop(up, timeout=15)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with deployed(tmp_path, BLUEPRINT, analytics=True) as running:
        yield running


def run(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def load(base: str, plan: dict[str, int]) -> Counter[str]:
    """The planned requests, interleaved (one of each path in turn), ``CONCURRENCY`` at a time; the responses
    counted by status class."""
    sent: Counter[str] = Counter()
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def one(path: str) -> None:
            async with limit:
                response = await http.get(path)
            sent[f"{response.status_code // 100}xx"] += 1

        rounds = zip_longest(*([path] * count for path, count in plan.items()))
        await asyncio.gather(*(one(path) for paths in rounds for path in paths if path is not None))
    return sent


def report(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/_backworks/report?since=15m", timeout=5)
    found: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return found


def by_class(found: dict[str, Any]) -> Counter[str]:
    total: Counter[str] = Counter()
    for row in found.get("endpoints", {}).values():
        total.update(row["statuses"])
    return total


def settle(base: str, sent: Counter[str]) -> dict[str, Any]:
    """The report once it counts every request sent."""
    run(eventually(lambda: by_class(report(base)) == sent, timeout=30, interval=0.5))
    return report(base)


def number(value: str) -> float | None:
    return None if value == "" else float(value)


def shown_routes(shown: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    return {route: {field: number(cells[field]["value"]) for field in ROUTE_FIELDS}
            for route, cells in shown["routes"].items()}  # fmt: skip


def reported_routes(found: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    return {
        route: {field: row["statuses"].get(field, 0) if field.endswith("xx") else row[field] for field in ROUTE_FIELDS}
        for route, row in found["endpoints"].items()
    }


def read_after_next_refresh(page: Page) -> dict[str, Any]:
    """What the page shows once it has refreshed by itself (no reload) after this call."""
    before = int(page.evaluate("() => Number(document.body.dataset.refreshes)"))
    page.wait_for_function(f"() => Number(document.body.dataset.refreshes) > {before}", timeout=PAGE_WAIT_MS)
    shown: dict[str, Any] = page.evaluate(READ_PAGE)
    return shown


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; the test fails (never skips) without it."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(INSTALL_HINT)
    return found


@pytest.mark.timeout(240)  # a whole stack and a browser on 2 shared cores: ~15 s idle, 50 s seen under load
def test_the_dashboard_shows_the_reports_numbers_live_in_a_real_browser(chromium: str, stack: Stack) -> None:
    sent = run(load(stack.base, PLAN))
    assert sent == {"2xx": 100, "5xx": 30, "4xx": 20}, sent
    settle(stack.base, sent)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            assert page.goto(f"{stack.base}/_backworks/").status == 200  # type: ignore[union-attr]  # None only for about:blank

            # The routes: the same numbers as the report, which counts every request sent, by status class.
            shown = read_after_next_refresh(page)
            found = report(stack.base)
            assert shown["state"] == "live", shown["status"]
            assert shown_routes(shown) == reported_routes(found)
            assert {kind: sum(int(row[kind] or 0) for row in shown_routes(shown).values())
                    for kind in ("2xx", "4xx", "5xx")} == sent  # fmt: skip
            assert shown["routes"]["hello"]["count"]["text"] == "100", "the number a person reads"
            assert shown["routes"]["broken"]["error_rate"]["text"] == "100.0"
            rate = number(shown["routes"]["hello"]["rate"]["value"])  # hello had the load's last requests
            assert rate is not None and rate > 0, shown["routes"]["hello"]

            # The stages, with their live replicas as the gateway's health sees them, nothing pending. Waited for:
            # on a busy machine one refresh may miss a heartbeat or JetStream's answer (then it shows a dash).
            page.wait_for_function(
                f"""() => {{
                  const expected = {json.dumps(REPLICAS)};
                  const rows = [...document.querySelectorAll('#stages tr[data-stage]')];
                  const value = (row, field) => row.querySelector(`td[data-field=${{field}}]`).dataset.value;
                  return rows.length === Object.keys(expected).length && rows.every((row) =>
                    value(row, 'live_replicas') === String(expected[row.dataset.stage]) &&
                    value(row, 'pending') === '0' && value(row, 'breaker') === 'closed');
                }}""",
                timeout=PAGE_WAIT_MS,
            )
            health = httpx.get(f"{stack.base}/_backworks/health", timeout=5).json()
            assert {label: stage["live_replicas"] for label, stage in health["stages"].items()} == REPLICAS

            # The last requests, newest first, each with its stages' timeline from the report.
            recent = found["recent"][:SHOWN_REQUESTS]
            assert len(shown["recent"]) == SHOWN_REQUESTS
            assert [r["request_id"] for r in shown["recent"]] == [r["request_id"] for r in recent]
            assert [r["stages"] for r in shown["recent"]] == [r["stages"] for r in recent]
            assert [int(r["status"]) for r in shown["recent"]] == [r["status"] for r in recent]
            timelines = {r["route"]: [s["stage"] for s in shown_stages["stages"]]
                         for r, shown_stages in zip(recent, shown["recent"], strict=True)}  # fmt: skip
            assert timelines["hello"] == ["stamp.request", "hello-handler.request"], timelines

            # New traffic shows up without a reload.
            more = run(load(stack.base, {"/hello": 25}))
            sent.update(more)
            settle(stack.base, sent)
            page.wait_for_function(
                """() => document.querySelector('#routes tr[data-route=hello] td[data-field=count]')
                   ?.dataset.value === '125'""",
                timeout=PAGE_WAIT_MS,
            )

            # The analytics service stops: the page says so (and how to start it), and keeps the stages.
            stop(stack.analytics)
            page.wait_for_function("() => document.getElementById('status').dataset.state === 'no-analytics'",
                                   timeout=PAGE_WAIT_MS)  # fmt: skip
            gone = page.evaluate(READ_PAGE)
            assert "backworks analytics serve" in gone["status"], gone["status"]
            assert gone["routes"] == {} and "analytics service is not running" in gone["empty"]
            assert gone["stages"]["stamp.request"]["live_replicas"]["value"] == "2"

            # The gateway stops: the page keeps the last numbers and says they are stale.
            stop(stack.up, timeout=15)
            page.wait_for_function(
                "() => ['unreachable', 'stale'].includes(document.getElementById('status').dataset.state)",
                timeout=PAGE_WAIT_MS,
            )
            assert page.evaluate("() => document.body.dataset.stale") == "true"
            assert page.evaluate(READ_PAGE)["stages"], "the last stages seen stay on the page"
            assert [e for e in errors if "Failed to load resource" not in e] == [], errors
        finally:
            browser.close()


QUIET = """
name: quiet
events: {enabled: false}
endpoints:
  hello:
    path: /hello
    handler: {type: mock}
"""


@pytest.mark.timeout(180)  # a stack and a browser on 2 shared cores
def test_without_analytics_or_events_the_page_says_why_instead_of_staying_blank(chromium: str, tmp_path: Path) -> None:
    with deployed(tmp_path, QUIET, analytics=False) as running, sync_playwright() as playwright:
        assert httpx.get(f"{running.base}/hello", timeout=10).status_code == 200
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            page.goto(f"{running.base}/_backworks/")
            page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1", timeout=PAGE_WAIT_MS)
            shown = page.evaluate(READ_PAGE)
            notice = page.evaluate("() => document.getElementById('notice').textContent")
            visible = page.is_visible("#notice")
        finally:
            browser.close()
    assert shown["state"] == "no-analytics", shown["status"]
    assert "start `backworks analytics serve BLUEPRINT`" in shown["status"]
    assert shown["routes"] == {} and shown["recent"] == []
    assert "analytics service is not running" in shown["empty"]
    assert visible and "Per-request events are off" in notice, notice
    assert shown["stages"]["hello-handler.request"]["live_replicas"]["value"] == "1"
