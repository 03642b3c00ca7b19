"""The hardened edge against a real ``backworks up``, attacked over raw sockets as the security review did."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backworks.gateway.connections import REPORT_EVERY_S
from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy
from tests.gateway.rawhttp import RawResponse, closed_within, connect, exchange, parse, read_until_closed

pytestmark = pytest.mark.e2e

MAX_CONNECTIONS = 30
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 1
KEEPALIVE_TIMEOUT_S = 1
CLOSE_BOUND_S = 15.0
"""Generous: the timeouts are 1-2 s; a loaded shared machine may be many times slower, never this much."""
BLUEPRINT = f"""
name: edge-api
nats: {{url: embedded}}
gateway:
  max_body_bytes: 1024
  header_timeout_s: {HEADER_TIMEOUT_S}
  body_timeout_s: {BODY_TIMEOUT_S}
  keepalive_timeout_s: {KEEPALIVE_TIMEOUT_S}
  max_connections: {MAX_CONNECTIONS}
plugins:
  secure: {{type: response-headers, config: {{set: {{x-content-type-options: nosniff}}}}}}
endpoints:
  hello:
    path: /hello/{{name}}
    methods: [GET, POST]
    plugins: [secure]
    handler: {{type: mock, config: {{status: 200, body: {{greeting: "Hello, {{path.name}}!"}}}}}}
"""


@dataclass
class Edge:
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/_backworks/health", timeout=10).json()
        return body

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One ``backworks up`` with small edge limits, shared by the module's tests (each leaves it as it found it)."""
    folder = tmp_path_factory.mktemp("edge")
    (folder / "blueprint.yaml").write_text(BLUEPRINT)
    running = Edge(free_port(), folder / "up.log")
    up: subprocess.Popen[bytes] = start(
        "up", str(folder / "blueprint.yaml"), "--port", str(running.port), log=running.log, cwd=folder
    )
    try:
        wait_healthy(running.base, process=up, log=running.log)
        yield running
    finally:
        stop(up, timeout=15)


def reported(edge: Edge, event: str, at_least: int) -> list[dict[str, Any]]:
    """The edge's rate-limited reports, once they add up to ``at_least`` ``event``s (or after one interval more)."""
    deadline = time.monotonic() + REPORT_EVERY_S + CLOSE_BOUND_S
    while True:
        lines = [line for line in edge.log_lines() if line.get("event") == "clients refused or closed at the edge"]
        if sum(line.get(event, 0) for line in lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def assert_problem(response: RawResponse, status: int) -> dict[str, Any]:
    assert response.status == status, response
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["detail"] and problem["request_id"]
    return problem


def head(*lines: bytes, target: bytes = b"/hello/x") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: edge\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param(head(b"X-Big: " + b"a" * 1024 * 1024), id="1 MB header"),
        pytest.param(head(*[b"X-Line-%d: v" % i for i in range(10_000)]), id="10k header lines"),
        pytest.param(head(b"X-Huge: " + b"a" * 9 * 1024 * 1024), id="9 MB header (was a 500: MaxPayloadError)"),
        pytest.param(head(*[b"X-L%d: v" % i for i in range(300)]), id="300 short header lines"),
    ],
)
def test_oversized_headers_are_refused_with_431(edge: Edge, request_head: bytes) -> None:
    before = edge.health()["edge"]["headers_too_large"]
    problem = assert_problem(exchange(edge.port, request_head), 431)
    assert "gateway.max_header" in problem["detail"]
    assert edge.health()["edge"]["headers_too_large"] == before + 1


def test_headers_within_the_limits_are_served(edge: Edge) -> None:
    request = head(b"X-Fine: " + b"a" * 60_000, *[b"X-L%d: v" % i for i in range(200)], b"Connection: close")
    response = exchange(edge.port, request)
    assert response.status == 200, response
    assert json.loads(response.body) == {"greeting": "Hello, x!"}


def test_headers_reach_the_app_as_uvicorn_gives_them(edge: Edge) -> None:
    """Names lower-cased, trailing whitespace stripped, ``Expect: 100-continue`` honoured (EdgeProtocol's on_header)."""
    request = head(b"X-REQUEST-ID: edge-77 \t", b"Connection: close")
    response = exchange(edge.port, request)
    assert response.status == 200 and response.headers["x-request-id"] == "edge-77"
    with connect(edge.port) as sock:
        sock.sendall(b"POST /hello/x HTTP/1.1\r\nHost: e\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hi")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_long_request_target_is_refused_with_414(edge: Edge) -> None:
    problem = assert_problem(exchange(edge.port, head(target=b"/hello/" + b"a" * 9 * 1024)), 414)
    assert "gateway.max_request_line_bytes" in problem["detail"]


def test_a_malformed_request_is_a_400_problem(edge: Edge) -> None:
    assert_problem(exchange(edge.port, b"NOT HTTP AT ALL\r\n\r\n"), 400)
    assert_problem(exchange(edge.port, b"GET /hello/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n"), 400)


def test_everything_the_gateway_answers_itself_is_problem_json(edge: Edge) -> None:
    not_found = httpx.get(f"{edge.base}/nowhere", timeout=10)
    not_allowed = httpx.delete(f"{edge.base}/hello/x", timeout=10)
    too_large = httpx.post(f"{edge.base}/hello/x", content=b"x" * 2048, timeout=10)
    for response, status in ((not_found, 404), (not_allowed, 405), (too_large, 413)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status


def test_slowloris_is_closed_after_the_header_timeout(edge: Edge) -> None:
    before = edge.health()["edge"]["header_timeout"]
    started = time.monotonic()
    with connect(edge.port) as sock:
        sock.sendall(b"GET /hello/x HTTP/1.1\r\nHost: edge\r\n")
        closed, received = trickle_until_closed(sock, started)  # never finishing the header
    assert closed, f"a connection trickling its headers was still open after {CLOSE_BOUND_S} s"
    if received:  # the 408 may be lost to the reset a closing socket with unread bytes sends
        assert_problem(parse(received), 408)
    assert edge.health()["edge"]["header_timeout"] > before


def trickle_until_closed(sock: socket.socket, started: float) -> tuple[bool, bytes]:
    """Send a byte at a time until the server closes ``sock`` (or ``CLOSE_BOUND_S`` passes)."""
    closed, received = False, b""
    while not closed and time.monotonic() - started < CLOSE_BOUND_S:
        try:
            sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            return True, received + read_until_closed(sock)
        closed, received = closed_within(sock, 0.3)
    return closed, received


def test_a_slow_body_is_closed_after_the_body_timeout(edge: Edge) -> None:
    before = edge.health()["edge"]["body_timeout"]
    started = time.monotonic()
    with connect(edge.port) as sock:
        sock.sendall(b"POST /hello/x HTTP/1.1\r\nHost: edge\r\nContent-Length: 1000\r\n\r\nfirst bytes")
        closed, received = trickle_until_closed(sock, started)
    assert closed, f"a connection trickling its body was still open after {CLOSE_BOUND_S} s"
    if received:
        assert_problem(parse(received), 408)
    assert edge.health()["edge"]["body_timeout"] == before + 1


def test_a_silent_connection_and_an_idle_keep_alive_one_are_closed(edge: Edge) -> None:
    with connect(edge.port) as silent:
        closed, _ = closed_within(silent, CLOSE_BOUND_S)
        assert closed, "a connection that never sent a byte stayed open"
    with connect(edge.port) as idle:
        idle.sendall(head())
        answered = b""
        while b'"}' not in answered:  # the mock's JSON body ends the response
            answered += idle.recv(65536)
        assert answered.startswith(b"HTTP/1.1 200")
        closed, _ = closed_within(idle, CLOSE_BOUND_S)
        assert closed, "an idle keep-alive connection stayed open"


def test_a_connection_flood_makes_room_and_legitimate_requests_are_served(edge: Edge) -> None:
    before = edge.health()["edge"]
    flood: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS * 4):
            flood.append(connect(edge.port))
        started = time.monotonic()
        response = httpx.get(f"{edge.base}/hello/legit", timeout=CLOSE_BOUND_S)
        took = time.monotonic() - started
        after = edge.health()["edge"]
    finally:
        for sock in flood:
            sock.close()
    assert response.status_code == 200 and response.json() == {"greeting": "Hello, legit!"}
    assert took < CLOSE_BOUND_S
    assert after["max_connections"] == MAX_CONNECTIONS
    assert after["open_connections"] <= MAX_CONNECTIONS
    evicted = after["evicted"] - before["evicted"]
    assert evicted >= MAX_CONNECTIONS, after  # 120 sockets against 30 places: the oldest idle ones gave way
    reports = reported(edge, "evicted", at_least=after["evicted"])
    assert sum(line.get("evicted", 0) for line in reports) >= after["evicted"], "every eviction is in the log"
    assert len(reports) < 10, "logged at most once per interval, not once per socket"


def test_a_client_that_disconnects_mid_body_is_an_info_event(edge: Edge) -> None:
    with connect(edge.port) as sock:
        sock.sendall(
            b"POST /hello/x HTTP/1.1\r\nHost: edge\r\nX-Request-Id: gone-123\r\nContent-Length: 1000\r\n\r\n1234"
        )
        time.sleep(0.3)
    deadline = time.monotonic() + CLOSE_BOUND_S
    while time.monotonic() < deadline:
        lines = [line for line in edge.log_lines() if line.get("request_id") == "gone-123"]
        if any(line.get("event") == "client disconnected" for line in lines):
            break
        time.sleep(0.1)
    events = [line for line in lines if line.get("event") == "client disconnected"]
    assert len(events) == 1, lines
    (event,) = events
    assert event["level"] == "info"
    assert [line for line in lines if line.get("level") in ("error", "critical")] == []
    assert not any("exception" in line for line in lines)
    assert "ClientDisconnect" not in edge.log.read_text(), "no traceback, from us or from uvicorn"


def test_an_upgrade_request_is_served_as_plain_http_without_a_warning(edge: Edge) -> None:
    logged = len(edge.log.read_text())
    request = head(b"Connection: Upgrade, close", b"Upgrade: websocket")
    response = exchange(edge.port, request)
    assert response.status == 200, response
    time.sleep(0.5)
    assert "pgrade" not in edge.log.read_text()[logged:], "no log line per upgrade request"
