"""The services run by hand, as separate processes, the way docker-compose runs them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy, wait_http
from tests.files import write_blueprint

pytestmark = pytest.mark.e2e

BLUEPRINT = """name: by-hand
defaults: {{timeout_ms: {timeout_ms}, plugins: [stamp]}}
plugins:
  stamp:  {{type: request-headers, config: {{set: {{x-stamped: "yes"}}}}}}
  secure: {{type: response-headers, config: {{set: {{x-content-type-options: nosniff}}}}}}
endpoints:
  hello:
    path: /hello/{{name}}
    plugins: [secure]
    handler: {{type: mock, config: {{body: {{greeting: "Hello, {{path.name}}!"}}}}}}
"""


def test_killing_the_only_replica_of_a_stage_fails_fast_and_recovers(tmp_path: Path) -> None:
    timeout_ms = 2000
    blueprint = write_blueprint(tmp_path, BLUEPRINT.format(timeout_ms=timeout_ms))
    nats_port, http_port = free_port(), free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    base = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "services.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start("nats", "--port", str(nats_port), log=log))
        serve = {name: start("serve", name, str(blueprint), "--nats", url, log=log)
                 for name in ("stamp", "secure", "hello-handler")}  # fmt: skip
        processes += serve.values()
        processes.append(start("gateway", str(blueprint), "--nats", url, "--port", str(http_port), log=log))
        wait_healthy(base)
        assert httpx.get(f"{base}/hello/a", timeout=5).status_code == 200

        # The handler is critical: with its only replica gone, requests fail with a problem, never hang.
        serve["hello-handler"].kill()
        serve["hello-handler"].wait()
        statuses = []
        for _ in range(8):
            started = time.monotonic()
            response = httpx.get(f"{base}/hello/b", timeout=timeout_ms / 1000 * 4)
            took = time.monotonic() - started
            assert response.headers["content-type"] == "application/problem+json", response.text
            assert response.json()["stage"] == "hello-handler.request"
            assert took < timeout_ms / 1000 * 2, "answered by the request deadline at the latest, never hangs"
            statuses.append(response.status_code)
        assert set(statuses) <= {503, 504}
        assert statuses[-1] == 503, "once its heartbeat is stale the stage is refused at once"

        # secure is not critical: without it the route answers, degraded, and says so.
        stop(serve["secure"])
        degraded = httpx.get(f"{base}/hello/c", timeout=5)
        assert degraded.status_code == 503  # the handler is still down

        processes.append(start("serve", "hello-handler", str(blueprint), "--nats", url, log=log))
        wait_http(f"{base}/hello/d", timeout=30)
        response = httpx.get(f"{base}/hello/d", timeout=5)
        assert response.status_code == 200
        assert response.headers["x-backworks-skipped"] == "secure.response"
        assert "x-content-type-options" not in response.headers
    finally:
        for process in reversed(processes):
            stop(process)
