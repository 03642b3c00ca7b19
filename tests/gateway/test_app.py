from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from nats.aio.client import Client
from structlog.testing import capture_logs

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually


async def test_request_through_three_stages(gateway: Gateway, nats_client: Client, example: LoadedBlueprint) -> None:
    async with running_stages(example, nats_client), gateway(example) as (http, _):
        response = await http.get("/hello/world", headers={"x-request-id": "abc-123"})
    assert response.status_code == 200
    assert response.json() == {"greeting": "Hello, world!"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"] == "abc-123"
    timing = response.headers["server-timing"]
    stages = [entry.split(";")[0].strip() for entry in timing.split(",")]
    assert stages == ["stamp.request", "hello-handler.request", "secure.response", "total"]


async def test_a_request_id_is_made_when_absent_or_unsafe(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with running_stages(example, nats_client), gateway(example) as (http, _):
        first = await http.get("/hello/a")
        second = await http.get("/hello/b", headers={"x-request-id": "bad id\twith spaces"})
    assert len(first.headers["x-request-id"]) == 32
    assert second.headers["x-request-id"] != "bad id\twith spaces"


async def test_health_reports_nats_and_live_replicas(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with running_stages(example, nats_client), gateway(example) as (http, state):
        liveness = state.liveness
        assert liveness is not None
        await eventually(lambda: all(liveness.count(name) for name in example.instances))
        response = await http.get("/_backworks/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["nats"]["connected"] is True
    assert {name: stage["live_replicas"] for name, stage in body["stages"].items()} == {
        "stamp.request": 1,
        "secure.response": 1,
        "hello-handler.request": 1,
    }


async def test_missing_critical_stage_is_503_at_once_and_missing_optional_stage_is_skipped(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with (
        running_stages(example, nats_client, only=["stamp", "secure"]),
        gateway(example) as (http, _),
    ):
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            response = await http.get("/hello/world", headers={"x-request-id": "req-503"})
        health = await http.get("/_backworks/health")
    assert response.status_code == 503
    (failed,) = [entry for entry in logs if entry["event"] == "request failed"]
    assert failed["request_id"] == "req-503", "bound through contextvars for every line of the request"
    assert structlog.contextvars.get_contextvars().get("request_id") is None, "unbound after the request"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["stage"] == "hello-handler.request"
    assert problem["cause"] == "unavailable"
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"

    async with running_stages(example, nats_client, only=["hello-handler"]), gateway(example) as (http, _):
        degraded = await http.get("/hello/world")
    assert degraded.status_code == 200
    assert degraded.headers["x-backworks-skipped"] == "stamp.request,secure.response"
    assert "x-content-type-options" not in degraded.headers


async def test_oversize_bodies_are_refused_with_413(tmp_path: Path, gateway: Gateway, nats_client: Client) -> None:
    path = write_blueprint(
        tmp_path,
        """name: api
gateway: {max_body_bytes: 10}
endpoints:
  echo: {path: /echo, methods: [POST], handler: {type: mock, config: {body: ok}}}
""",
    )
    loaded = blueprints.load(path)
    async with running_stages(loaded, nats_client), gateway(loaded) as (http, _):
        small = await http.post("/echo", content=b"0123456789")
        large = await http.post("/echo", content=b"x" * 11)
    assert small.status_code == 200 and small.text == "ok"
    assert large.status_code == 413
    assert large.json()["title"] == "Payload too large"


async def test_unknown_routes_and_methods_are_problem_json(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with gateway(example) as (http, _):
        missing = await http.get("/nope")
        wrong = await http.delete("/hello/x")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]


@pytest.mark.parametrize("timeout_ms", [300])
async def test_a_stage_that_never_answers_gives_504_within_the_deadline(
    tmp_path: Path, gateway: Gateway, nats_client: Client, timeout_ms: int
) -> None:
    path = write_blueprint(
        tmp_path,
        f"""name: api
defaults: {{timeout_ms: {timeout_ms}}}
endpoints:
  e: {{path: /x, handler: {{type: mock}}}}
""",
    )
    loaded = blueprints.load(path)
    # Liveness says the handler is alive (a stale heartbeat), but nothing consumes its messages.
    async with running_stages(loaded, nats_client) as hosts, gateway(loaded) as (http, state):
        liveness = state.liveness
        assert liveness is not None
        await eventually(lambda: liveness.count("e-handler") == 1)
        for consumer in hosts["e-handler"][0].consumers:
            await consumer.stop()
        response = await http.get("/x")
    assert response.status_code == 504
    assert response.json()["title"] == "Pipeline timed out"


async def test_broker_down_gives_503_and_health_reports_it(
    nats_server: EmbeddedNats, gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with gateway(example) as (http, state):
        nats_server.stop()
        client = state.client
        assert client is not None
        await eventually(lambda: not client.is_connected)
        response = await http.get("/hello/world")
        health = await http.get("/_backworks/health")
    assert response.status_code == 503
    assert response.json()["title"] == "Broker unavailable"
    assert health.status_code == 503
    assert health.json()["nats"]["connected"] is False
