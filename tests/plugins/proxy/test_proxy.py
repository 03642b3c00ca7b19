"""The proxy plugin against real upstreams (uvicorn on free loopback ports), called the way the stage host calls it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from backworks.contracts.envelope import Envelope, HttpResponse, Stage
from backworks.contracts.names import Phase
from backworks.local.ports import free_port
from backworks.pipeline.plugin import Continue, Respond
from backworks.plugins.proxy import Proxy
from backworks.plugins.proxy.config import ProxyConfig
from tests.upstreams import Upstream, running
from tests.waiting import eventually


@asynccontextmanager
async def proxy(**config: Any) -> AsyncIterator[Proxy]:
    plugin = Proxy(ProxyConfig.model_validate(config), instance="api-handler")
    await plugin.startup()
    try:
        yield plugin
    finally:
        await plugin.shutdown()


def request(method: str = "GET", path: str = "/users/7", body: bytes = b"", **fields: Any) -> Envelope:
    return Envelope(
        route="api",
        method=method,
        path=path,
        body=body,
        request_id="req-1",
        client="192.0.2.10",
        headers=[("host", "gw.example"), ("accept", "*/*")],
        itinerary=[Stage(instance="api-handler", phase=Phase.REQUEST, critical=True)],
        **fields,
    )


async def answer(plugin: Proxy, envelope: Envelope) -> HttpResponse:
    action = await plugin.handle(envelope)
    response = action.envelope.response if isinstance(action, Continue) else None
    if isinstance(action, Respond):
        response = action.response
    assert response is not None
    return response


async def test_forwards_with_rewritten_and_forwarding_headers() -> None:
    with running(Upstream("a")) as up:
        async with proxy(targets=[{"url": up.url}], strip_prefix="/users") as plugin:
            response = await answer(plugin, request("POST", "/users/7", b'{"x":1}', query=[("q", "1")]))
    assert response.status == 200
    assert json.loads(response.body)["body"] == '{"x":1}'
    assert response.header("x-upstream") == "a"
    assert response.header("keep-alive") is None, "hop-by-hop headers do not come back"
    seen = dict(up.last["headers"])
    assert up.last["path"] == "/7" and up.last["query"] == "q=1"
    assert seen["host"] == up.url.removeprefix("http://")
    assert seen["x-forwarded-for"] == "192.0.2.10"
    assert seen["x-forwarded-host"] == "gw.example"
    assert seen["forwarded"] == "for=192.0.2.10;host=gw.example;proto=http"


async def test_refused_is_502_and_slow_is_504_naming_the_target() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with proxy(targets=[{"url": dead}], retries=0) as plugin:
        refused = await answer(plugin, request())
    assert refused.status == 502 and refused.header("content-type") == "application/problem+json"
    problem = json.loads(refused.body)
    assert problem["target"] == dead and "refused the connection" in problem["detail"]
    assert problem["stage"] == "api-handler.request"
    with running(Upstream("slow", delay=2.0)) as slow:
        async with proxy(targets=[{"url": slow.url}], retries=0, timeout_ms=200) as plugin:
            timed_out = await answer(plugin, request())
    assert timed_out.status == 504
    assert json.loads(timed_out.body)["target"] == slow.url
    assert "did not answer within 200 ms" in json.loads(timed_out.body)["detail"]


@pytest.mark.parametrize(("method", "tries"), [("GET", 2), ("PUT", 2), ("POST", 1), ("PATCH", 1)])
async def test_only_idempotent_methods_are_retried_after_a_503(method: str, tries: int) -> None:
    with running(Upstream("a", status=503)) as a, running(Upstream("b", status=503)) as b:
        async with proxy(targets=[{"url": a.url}, {"url": b.url}], retries=1, passive_health=None) as plugin:
            response = await answer(plugin, request(method))
    assert response.status == 503, "the last upstream answer is passed on"
    assert a.hits + b.hits == tries


async def test_when_every_try_fails_the_problem_names_each_target_tried() -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    async with proxy(targets=[{"url": url} for url in dead], retries=1) as plugin:
        response = await answer(plugin, request("POST"))
    problem = json.loads(response.body)
    assert response.status == 502
    assert problem["tried"] == dead and problem["target"] == dead[1]
    assert problem["detail"].endswith(f"; tried before: {dead[0]} (refused)")


async def test_a_refused_connection_is_retried_on_another_target_even_for_post() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running(Upstream("b")) as b:
        async with proxy(targets=[{"url": dead}, {"url": b.url}], retries=1) as plugin:
            statuses = [(await answer(plugin, request("POST"))).status for _ in range(4)]
    assert statuses == [200] * 4
    assert b.hits == 4


async def test_a_failing_target_is_ejected_and_traffic_moves_to_the_other() -> None:
    with running(Upstream("good")) as good, running(Upstream("bad", status=500)) as bad:
        config = {"targets": [{"url": good.url}, {"url": bad.url}], "retries": 0,
                  "passive_health": {"consecutive_failures": 3, "base_eject_s": 30}}  # fmt: skip
        async with proxy(**config) as plugin:
            statuses = [(await answer(plugin, request())).status for _ in range(20)]
    assert bad.hits == 3, "ejected after three failures in a row"
    assert good.hits == 17
    assert statuses.count(500) == 3


async def test_every_target_failing_health_checks_is_503_and_it_comes_back() -> None:
    with running(Upstream("a", healthy=False)) as a:
        checks = {"path": "/health", "interval_s": 0.05, "healthy": 1, "unhealthy": 2}
        async with proxy(targets=[{"url": a.url}], active_health=checks) as plugin:
            await eventually(lambda: not plugin.upstreams.all[0].healthy)
            down = await answer(plugin, request())
            a.healthy = True
            await eventually(lambda: plugin.upstreams.all[0].healthy)
            up = await answer(plugin, request())
    assert down.status == 503
    assert a.url in json.loads(down.body)["detail"] and "health checks" in json.loads(down.body)["detail"]
    assert up.status == 200
    assert a.hits == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_upstream_body_larger_than_a_broker_message_is_502(chunked: bool) -> None:
    with running(Upstream("big", body_size=300_000, chunked=chunked)) as big:
        async with proxy(targets=[{"url": big.url}], max_response_bytes=100_000) as plugin:
            too_large = await answer(plugin, request())
            big.body_size = 100_000
            fits = await answer(plugin, request())
    assert too_large.status == 502
    detail = json.loads(too_large.body)["detail"]
    assert "more than the 100000 bytes" in detail
    assert ("sent more than" if chunked else "declares 300000 bytes") in detail
    assert fits.status == 200 and len(fits.body) == 100_000
