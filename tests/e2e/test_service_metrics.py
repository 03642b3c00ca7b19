"""``--metrics-port`` on every service: real ``serve``, ``audit serve`` and ``analytics serve`` processes expose
Prometheus metrics that move with the traffic; ``up --metrics-ports`` gives each replica a port and shows it."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy, wait_http
from tests.files import write_blueprint

pytestmark = pytest.mark.e2e

BLUEPRINT = """name: measured
defaults: {plugins: [stamp]}
plugins:
  stamp:  {type: request-headers, config: {set: {x-stamped: "yes"}}}
endpoints:
  hello:
    path: /hello/{name}
    handler: {type: mock, config: {body: {greeting: "Hello, {path.name}!"}}}
"""
REQUESTS = 12

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_serve_audit_and_analytics_expose_metrics_that_follow_the_traffic(tmp_path: Path) -> None:
    blueprint = str(write_blueprint(tmp_path, BLUEPRINT))
    nats_port, http_port = free_port(), free_port()
    stamp_port, handler_port, audit_port, analytics_port = (free_port() for _ in range(4))
    url = f"nats://127.0.0.1:{nats_port}"
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "services.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start("nats", "--port", str(nats_port), log=log))
        processes.append(start("serve", "stamp", blueprint, "--nats", url, "--metrics-port", str(stamp_port), log=log))
        processes.append(start("serve", "hello-handler", blueprint, "--nats", url, "--metrics-port",
                               str(handler_port), log=log))  # fmt: skip
        processes.append(start("gateway", blueprint, "--nats", url, "--port", str(http_port), log=log))
        processes.append(start("audit", "serve", blueprint, "--nats", url, "--metrics-port", str(audit_port),
                               log=log, cwd=tmp_path))  # fmt: skip
        processes.append(start("analytics", "serve", blueprint, "--nats", url, "--metrics-port",
                               str(analytics_port), log=log))  # fmt: skip
        wait_healthy(base)
        stamp = f"http://127.0.0.1:{stamp_port}/metrics"
        wait_http(stamp)
        before = scrape(stamp)
        ok = ("backworks_stage_messages_total", (("outcome", "ok"), ("stage", "stamp.request")))
        assert before.get(ok, 0) == 0
        assert before[("backworks_stage_in_flight", ())] == 0
        assert before[("backworks_breaker_state", (("instance", "stamp"),))] == 0

        for number in range(REQUESTS):
            assert httpx.get(f"{base}/hello/{number}", timeout=5).status_code == 200

        after = scrape(stamp)
        assert after[ok] == REQUESTS
        hooks = ("backworks_stage_hook_duration_seconds_count", (("stage", "stamp.request"),))
        assert after[hooks] == REQUESTS
        assert after[("backworks_stage_hook_duration_seconds_sum", (("stage", "stamp.request"),))] > 0
        assert after.get(("backworks_stage_redeliveries_total", (("stage", "stamp.request"),)), 0) == 0
        assert ("process_cpu_seconds_total", ()) in after
        handler = scrape(f"http://127.0.0.1:{handler_port}/metrics")
        assert handler[("backworks_stage_messages_total", (("outcome", "ok"), ("stage", "hello-handler.request")))] == (
            REQUESTS
        )
        labels = {label for (_, pairs) in after for label, _ in pairs}
        assert labels <= {"stage", "outcome", "instance", "reason", "le"}, labels

        # The subscribers store each request's events (received, stage completions, responded) and count them.
        def stored(port: int) -> float:
            return scrape(f"http://127.0.0.1:{port}/metrics").get(("backworks_tap_events_total", ()), 0)

        wait_for(lambda: stored(audit_port) >= REQUESTS * 2 and stored(analytics_port) >= REQUESTS * 2)
        analytics = scrape(f"http://127.0.0.1:{analytics_port}/metrics")
        assert analytics[("backworks_tap_store_duration_seconds_count", ())] >= 1
        assert ("backworks_events_lost_total", ()) not in analytics  # no loss reason seen: no sample
    finally:
        for process in reversed(processes):
            stop(process)


def test_up_gives_each_replica_a_metrics_port_and_prints_it(tmp_path: Path) -> None:
    blueprint = write_blueprint(tmp_path, BLUEPRINT)
    port = free_port()
    log = tmp_path / "up.log"
    up = start("up", str(blueprint), "--port", str(port), "--metrics-ports", "--replicas", "stamp=2", log=log,
               cwd=tmp_path, env={"BACKWORKS_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "250"})  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=up, log=log)

        def printed() -> list[str]:
            return re.findall(r"serve stamp #\d\s.*?(http://127\.0\.0\.1:\d+/metrics)", log.read_text())

        wait_for(lambda: len(printed()) == 2)
        urls = printed()
        assert len(set(urls)) == 2
        for number in range(REQUESTS):
            assert httpx.get(f"{base}/hello/{number}", timeout=5).status_code == 200
        key = ("backworks_stage_messages_total", (("outcome", "ok"), ("stage", "stamp.request")))
        assert sum(scrape(url).get(key, 0) for url in urls) == REQUESTS
    finally:
        stop(up, timeout=15)
