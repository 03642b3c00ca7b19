"""OTLP span export: a real gateway and real stage processes (``backworks up``) export to a collector in the test,
one server span per request and one span per stage, all in the trace named by the response's ``traceresponse``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from backworks.local.ports import free_port
from tests.e2e.processes import start, stop, wait_healthy
from tests.files import EXAMPLE
from tests.otlp import Collector, ReceivedSpan

pytestmark = pytest.mark.e2e

STAGES = {"stamp.request", "hello-handler.request", "secure.response"}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    yield found
    found.close()


def spans_of(collector: Collector, trace_id: str, count: int, timeout: float = 30.0) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while len(found := collector.of_trace(trace_id)) < count:
        assert time.monotonic() < deadline, f"only {found} arrived"
        time.sleep(0.2)
    return found


def test_one_request_gives_a_gateway_server_span_and_a_child_span_per_stage(
    tmp_path: Path, collector: Collector
) -> None:
    port = free_port()
    log = tmp_path / "up.log"
    env = {
        "BACKWORKS_STATE_DIR": str(tmp_path / "state"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds: export soon after each span
    }
    up = start("up", str(EXAMPLE), "--port", str(port), log=log, cwd=tmp_path, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=up, log=log)
        response = httpx.get(f"{base}/hello/ada", timeout=10)
        assert response.status_code == 200
        _, trace_id, gateway_span_id, _ = response.headers["traceresponse"].split("-")

        found = spans_of(collector, trace_id, 1 + len(STAGES))
        (server,) = [s for s in found if s.kind == Span.SPAN_KIND_SERVER]
        assert server.service == "backworks-gateway"
        assert server.span_id == gateway_span_id, "the gateway's span is the one its traceresponse names"
        assert server.parent_span_id == ""  # the client sent no traceparent: a new trace
        assert server.name == "GET /hello/{name}"
        assert server.attributes["http.response.status_code"] == 200
        stages = [s for s in found if s.kind == Span.SPAN_KIND_CONSUMER]
        assert {s.attributes["backworks.stage"] for s in stages} == STAGES
        for stage in stages:
            assert stage.parent_span_id == gateway_span_id
            assert stage.attributes["messaging.system"] == "nats"
            assert stage.attributes["messaging.operation.type"] == "process"
            assert stage.attributes["messaging.destination.name"].startswith("bw.stage.")
            assert stage.service == f"backworks-{stage.attributes['backworks.stage'].split('.')[0]}"
            assert server.start_ns <= stage.start_ns <= stage.end_ns <= server.end_ns + 50_000_000  # clocks: 50 ms

        # A client's own traceparent: the gateway's span joins its trace, as a child of the client's span.
        client = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
        joined = httpx.get(f"{base}/hello/bob", headers={"traceparent": client}, timeout=10)
        assert joined.headers["traceresponse"].split("-")[1] == CLIENT_TRACE
        found = spans_of(collector, CLIENT_TRACE, 1 + len(STAGES))
        (server,) = [s for s in found if s.kind == Span.SPAN_KIND_SERVER]
        assert server.parent_span_id == "00f067aa0ba902b7"
        assert {s.parent_span_id for s in found if s.kind == Span.SPAN_KIND_CONSUMER} == {server.span_id}
    finally:
        stop(up, timeout=15)
