"""``rate-limit`` (3 replicas) and ``cache`` in front of a ``mock`` handler, under ``backworks up``, over HTTP."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy

pytestmark = pytest.mark.e2e

LIMIT = 5
BLUEPRINT = f"""
name: traffic
plugins:
  limit: {{type: rate-limit, replicas: 3, config: {{limit: {LIMIT}, window_s: 60, by: ip}}}}
  cache: {{type: cache, config: {{ttl_s: 60}}}}
endpoints:
  items:
    path: /items/{{name}}
    plugins: [limit, cache]
    handler: {{type: mock, config: {{body: {{name: "{{path.name}}"}}}}}}
"""
HANDLER = "items-handler.request"


def stages_in(response: httpx.Response) -> list[str]:
    return [entry.split(";")[0].strip() for entry in response.headers["server-timing"].split(",")]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``backworks up`` on the blueprint above, healthy, with every replica of ``limit`` registered."""
    folder = tmp_path_factory.mktemp("traffic")
    blueprint = folder / "blueprint.yaml"
    blueprint.write_text(BLUEPRINT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "up.log"
    env = {"BACKWORKS_STATE_DIR": str(folder / "state")}
    up: subprocess.Popen[bytes] = start("up", str(blueprint), "--port", str(port), log=log, cwd=folder, env=env)
    try:
        health = wait_healthy(url, process=up, log=log)
        assert len(health["stages"]["limit.request"]["replicas"]) == 3, health["stages"]["limit.request"]
        yield url
    finally:
        stop(up, timeout=15)
    assert up.returncode == 0, Path(log).read_text()[-3000:]


def test_the_limit_holds_with_headers_and_a_429_never_reaches_the_handler_or_the_cache(base: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as http:
        miss = http.get("/items/a")
        assert miss.status_code == 200, miss.text
        assert miss.json() == {"name": "a"}
        assert miss.headers["x-cache"] == "miss"
        assert HANDLER in stages_in(miss)
        assert miss.headers["ratelimit-limit"] == str(LIMIT)
        assert miss.headers["ratelimit-remaining"] == str(LIMIT - 1)
        assert 0 < int(miss.headers["ratelimit-reset"]) <= 63
        assert miss.headers["ratelimit-policy"] == f"{LIMIT};w=60"

        hit = http.get("/items/a")
        assert hit.status_code == 200 and hit.json() == {"name": "a"}
        assert hit.headers["x-cache"] == "hit"
        assert 0 <= int(hit.headers["age"]) <= 5
        assert HANDLER not in stages_in(hit), "a hit never reaches the handler"
        assert hit.headers["ratelimit-remaining"] == str(LIMIT - 2), "the limiter runs before the cache: hits count"

        answered = [http.get(f"/items/{name}") for name in ("b", "c", "d")]
        assert [r.status_code for r in answered] == [200, 200, 200]
        assert [r.headers["ratelimit-remaining"] for r in answered] == ["2", "1", "0"]

        refused = http.get("/items/e")
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["status"] == 429 and problem["title"] == "Too Many Requests"
        assert f"{LIMIT} requests per 60 s" in problem["detail"]
        assert 0 < int(refused.headers["retry-after"]) <= 63
        assert refused.headers["ratelimit-limit"] == str(LIMIT)
        assert refused.headers["ratelimit-remaining"] == "0"
        assert 0 < int(refused.headers["ratelimit-reset"]) <= 63
        stages = stages_in(refused)
        assert "limit.request" in stages and "limit.response" in stages
        assert HANDLER not in stages and "cache.request" not in stages, stages

        # Refused requests consumed nothing, and a cached answer is refused too once the budget is spent.
        again = http.get("/items/a")
        assert again.status_code == 429 and "x-cache" not in again.headers
