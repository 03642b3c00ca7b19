"""The last requests answered, with their per-stage timelines: a bounded ring fed by responded events, reported
newest first within the report's window."""

from __future__ import annotations

from typing import Any

from backworks.contracts.names import REQUEST_RESPONDED_SUBJECT
from backworks.tap.aggregates import BUCKET_S, Aggregates
from backworks.tap.recent import PATH_CHARS, RECENT_REQUESTS

NOW = 1_000_020.0


def responded(number: int, at: float, status: int = 200) -> dict[str, Any]:
    return {
        "event_id": f"e{number}", "request_id": f"r{number}", "trace_id": "t" * 32, "route": "notes",
        "method": "GET", "path": f"/notes/{number}", "status": status, "total_ms": 5.0, "at": at,
        "stages": [{"stage": "keys.request", "ms": 1.5}, {"stage": "notes-handler.request", "ms": 0.5}],
        "degraded": [], "failed_stage": None, "consumer": "alice", "body": "secret body",
    }  # fmt: skip


def test_the_report_carries_the_last_requests_newest_first_with_their_stage_timelines() -> None:
    aggregates = Aggregates()
    for number in range(RECENT_REQUESTS + 10):
        event = responded(number, at=NOW - 5 + number / 1000, status=500 if number % 7 == 0 else 200)
        aggregates.add(REQUEST_RESPONDED_SUBJECT, event)
        aggregates.add(REQUEST_RESPONDED_SUBJECT, event)  # redelivered: kept once
    recent = aggregates.report(900, now=NOW)["recent"]
    assert [r["request_id"] for r in recent] == [f"r{n}" for n in reversed(range(10, RECENT_REQUESTS + 10))]
    newest = recent[0]
    assert newest["stages"] == [{"stage": "keys.request", "ms": 1.5}, {"stage": "notes-handler.request", "ms": 0.5}]
    assert (newest["route"], newest["method"], newest["path"], newest["total_ms"]) == ("notes", "GET", "/notes/59", 5.0)
    assert "body" not in newest and "consumer" not in newest, "bodies and callers stay in the audit store"
    assert [r["status"] for r in recent] == [500 if int(r["request_id"][1:]) % 7 == 0 else 200 for r in recent]
    assert {r["status"] for r in recent} == {200, 500}


def test_a_request_outside_the_window_is_not_reported_and_a_long_path_is_cut() -> None:
    aggregates = Aggregates()
    aggregates.add(REQUEST_RESPONDED_SUBJECT, responded(1, at=NOW - 3 * BUCKET_S))
    aggregates.add(REQUEST_RESPONDED_SUBJECT, {**responded(2, at=NOW), "path": "/" + "x" * 1000})
    report = aggregates.report(60, now=NOW)
    assert report["window_start"] == (NOW - 60) // BUCKET_S * BUCKET_S
    assert [r["request_id"] for r in report["recent"]] == ["r2"]
    assert len(report["recent"][0]["path"]) == PATH_CHARS
    assert [r["request_id"] for r in aggregates.report(900, now=NOW)["recent"]] == ["r2", "r1"]
