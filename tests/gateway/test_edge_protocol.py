"""The edge protocol under a real uvicorn server in a thread, with a slow app: what only busy connections show."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from backworks.contracts.blueprint import GatewaySettings
from backworks.gateway.connections import EdgeStats
from backworks.gateway.server import uvicorn_config
from backworks.local.ports import free_port
from tests.gateway.rawhttp import connect, parse, read_until_closed

SLOW_S = 5.0
BOUND_S = 15.0


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(SLOW_S)
    return PlainTextResponse("slow")


async def fast(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fast")


@pytest.fixture
def busy_edge() -> Iterator[tuple[int, EdgeStats, uvicorn.Server]]:
    """A server holding at most two connections, its app answering ``/slow`` after ``SLOW_S``."""
    port, stats = free_port(), EdgeStats()
    app = Starlette(routes=[Route("/slow", slow), Route("/fast", fast)])
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, GatewaySettings(max_connections=2), stats))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + BOUND_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield port, stats, server
    finally:
        server.should_exit = True
        thread.join(BOUND_S)


def test_when_every_connection_is_busy_a_new_one_is_refused_with_a_503_problem(
    busy_edge: tuple[int, EdgeStats, uvicorn.Server],
) -> None:
    port, stats, server = busy_edge
    busy = [connect(port) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: e\r\n\r\n")
        deadline = time.monotonic() + BOUND_S
        while len(server.server_state.tasks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # until both requests run: both connections are busy
        started = time.monotonic()
        with connect(port) as newcomer:
            refused = parse(read_until_closed(newcomer))
        assert time.monotonic() - started < BOUND_S
        assert refused.status == 503 and refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Too many connections"
        assert stats.report()["refused"] == 1 and stats.report()["evicted"] == 0
        for sock in busy:  # the busy ones were not touched
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in busy:
            sock.close()
    assert httpx.get(f"http://127.0.0.1:{port}/fast", timeout=BOUND_S).text == "fast"
