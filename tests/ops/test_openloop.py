"""The benchmark's open loop (fixed arrival rate, latency from the due time) and its rate search."""

from __future__ import annotations

import asyncio
from typing import Any

from hdrh.histogram import HdrHistogram

from ops.bench import openloop, ratesearch

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def serve(delay: float = 0.0, hang_up: bool = False) -> tuple[asyncio.Server, int]:
    """A keep-alive HTTP/1.1 endpoint answering every request after ``delay`` seconds (one at a time per connection);
    ``hang_up``: it closes the connection instead of answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if hang_up:
                    break
                if delay:
                    await asyncio.sleep(delay)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_sends_at_the_fixed_rate_and_answers_every_due_request() -> None:
    server, port = await serve()
    async with server:
        job = openloop.OpenJob("127.0.0.1", port, "/", rate=200, duration=0.5, connections=4, warmup=0.1)
        result = await openloop.run(job)
    assert result["intended"] == 100, "every request due in the window: rate x duration"
    assert result["count"] == result["intended"]
    assert result["failed"] == result["unfinished"] == 0
    assert result["statuses"] == {"200": 100}
    assert 0 < result["p50"] <= result["p99"] <= result["max"]
    assert result["completed"] >= result["count"], "warm-up responses are completed but not measured"
    histogram = HdrHistogram.decode(result["histogram"])
    assert histogram.get_total_count() == 100


async def test_a_slow_server_is_charged_the_wait_of_requests_queued_behind_it() -> None:
    # One connection, 50 ms per response, 100 requests due per second: the server keeps up with 20 per second, so
    # requests wait in the backlog and their latency, counted from when they were due, grows far beyond 50 ms.
    server, port = await serve(delay=0.05)
    async with server:
        job = openloop.OpenJob("127.0.0.1", port, "/", rate=100, duration=0.3, connections=1)
        result = await openloop.run(job)
    assert result["intended"] == 30
    assert result["max_backlog"] > 1
    assert result["count"] == 30, "late, but every request is answered during the drain"
    assert result["max"] > 2 * 50, "a closed loop would report ~50 ms for every request (coordinated omission)"


async def test_requests_a_closed_connection_never_answers_count_as_failed() -> None:
    server, port = await serve(hang_up=True)
    async with server:
        job = openloop.OpenJob("127.0.0.1", port, "/", rate=100, duration=0.2, connections=2)
        result = await openloop.run(job)
    assert result["count"] == 0
    assert result["intended"] == 20
    assert result["failed"] == 20, "the two sent on the lost connections, and every one due after"
    assert result["p99"] == 0.0, "no latency is made up for requests never answered"
    assert not ratesearch.sustained(result, bound_ms=50)


def point(rate: float, p99: float, failed: int = 0) -> dict[str, Any]:
    return {"rate": rate, "p99": p99, "failed": failed, "unfinished": 0, "count": 10, "intended": 10}


def test_search_climbs_while_sustained_and_reports_the_last_sustained_rate() -> None:
    capacity = 400.0
    tried: list[float] = []

    def measure(rate: float) -> dict[str, Any]:
        tried.append(rate)
        return point(rate, 5.0 if rate <= capacity else 500.0)

    found = ratesearch.search(measure, start=100, bound_ms=50, step=2, max_steps=8)
    assert tried == [100, 200, 400, 800]
    assert found["sustained_rps"] == 400
    assert found["bound_ms"] == 50 and len(found["points"]) == 4


def test_search_descends_when_the_first_rate_is_too_much() -> None:
    found = ratesearch.search(lambda rate: point(rate, 5.0 if rate <= 30 else 90.0), start=100, bound_ms=50, step=2)
    assert [p["rate"] for p in found["points"]] == [100, 50, 25]
    assert found["sustained_rps"] == 25


def test_failures_or_unanswered_requests_are_not_sustained() -> None:
    assert ratesearch.sustained(point(10, 1.0), 50)
    assert not ratesearch.sustained(point(10, 1.0, failed=1), 50)
    assert not ratesearch.sustained({**point(10, 1.0), "unfinished": 2}, 50)
    assert not ratesearch.sustained(point(10, 51.0), 50)
    found = ratesearch.search(lambda rate: point(rate, 500.0), start=4, bound_ms=50, step=2, max_steps=3)
    assert found["sustained_rps"] is None


def test_rows_compare_each_system_with_the_floor() -> None:
    results = {
        "open_loop": {
            "pipeline": {"bound_ms": 50, "sustained_rps": 300, "points": [point(300, 10), point(375, 80)]},
            "floor": {"bound_ms": 50, "sustained_rps": 600, "points": [point(600, 10)]},
        }
    }
    rows = ratesearch.rows(results)
    assert rows[0][:3] == ["pipeline", "300", "0.50x"]
    assert "375: 80.0 ✗" in rows[0][3]
    assert "50 ms" in ratesearch.title(results)
    assert ratesearch.rows({}) == []
