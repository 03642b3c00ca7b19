"""Rolling aggregates: windows merge minute buckets, redeliveries count once, percentiles come from the
histogram; alert rules fire and resolve once each."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console

from backworks.contracts.blueprint import AlertRule
from backworks.contracts.breakers import BreakerState
from backworks.contracts.events import AlertEvent, BreakerTransition
from backworks.contracts.names import REQUEST_RESPONDED_SUBJECT, STAGE_COMPLETED_SUBJECT, breaker_event_subject
from backworks.tap.aggregates import BUCKET_S, Aggregates, Dimension
from backworks.tap.alerts import AlertRules
from backworks.tap.reports import tables

NOW = 1_000_000.0


class Recorder:
    """An event publisher that keeps what it was given (the alert rules only call ``emit``)."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, BaseModel]] = []

    def emit(self, subject: str, event: BaseModel) -> None:
        self.emitted.append((subject, event))


def responded(number: int, status: int, ms: float, at: float, consumer: str | None = None) -> dict[str, Any]:
    return {"event_id": f"e{number}", "route": "notes", "status": status, "total_ms": ms, "at": at,
            "consumer": consumer, "degraded": []}  # fmt: skip


def test_a_window_counts_status_classes_errors_and_latency_once_per_event() -> None:
    aggregates = Aggregates()
    for number in range(100):
        status = 500 if number < 5 else 404 if number < 15 else 200
        event = responded(number, status, ms=float(number + 1), at=NOW - 30, consumer="alice" if number % 2 else None)
        aggregates.add(REQUEST_RESPONDED_SUBJECT, event)
        aggregates.add(REQUEST_RESPONDED_SUBJECT, event)  # redelivered
    aggregates.add(REQUEST_RESPONDED_SUBJECT, responded(1000, 200, 1.0, at=NOW - 3000))  # outside a 15 min window
    report = aggregates.report(900, now=NOW)
    notes = report["endpoints"]["notes"]
    assert notes["count"] == 100
    assert notes["statuses"] == {"2xx": 85, "4xx": 10, "5xx": 5}
    assert notes["error_rate"] == 0.05
    assert 49 <= notes["p50_ms"] <= 51 and 98 <= notes["p99_ms"] <= 101
    assert report["consumers"]["alice"]["count"] == 50
    assert report["duplicates"] == 100
    assert aggregates.report(3600, now=NOW)["endpoints"]["notes"]["count"] == 101


def test_a_split_gets_one_row_per_branch_with_its_error_rate_and_latency_side_by_side() -> None:
    aggregates = Aggregates()
    for number in range(100):
        branch = "auth-v2" if number % 10 == 0 else "auth-v1"
        status = 500 if branch == "auth-v2" and number % 20 == 0 else 200
        event = {**responded(number, status, ms=30.0 if branch == "auth-v2" else 10.0, at=NOW),
                 "branches": {"auth": branch}}  # fmt: skip
        aggregates.add(REQUEST_RESPONDED_SUBJECT, event)
    rows = aggregates.report(900, now=NOW)["branches"]
    assert set(rows) == {"notes/auth=auth-v1", "notes/auth=auth-v2"}
    old, new = rows["notes/auth=auth-v1"], rows["notes/auth=auth-v2"]
    assert (old["count"], old["error_rate"], new["count"], new["error_rate"]) == (90, 0.0, 10, 0.5)
    assert old["p99_ms"] < 11 and 29 < new["p99_ms"] < 31


def test_stage_events_tally_per_instance() -> None:
    aggregates = Aggregates()
    for number in range(4):
        event = {**responded(number, 200, 3.0, at=NOW), "stages": [{"stage": "keys.request", "ms": 2.0}]}
        aggregates.add(REQUEST_RESPONDED_SUBJECT, event)
        aggregates.add(STAGE_COMPLETED_SUBJECT, {"event_id": f"c{number}", "stage": "keys.request", "ms": 2.0,
                                                 "at": NOW})  # fmt: skip  # not counted twice
    aggregates.add("bw.evt.stage.error", {"event_id": "f1", "kind": "error", "stage": "keys.request",
                                          "skipped": False, "at": NOW})  # fmt: skip
    aggregates.add("bw.evt.stage.unavailable", {"event_id": "f2", "kind": "unavailable", "stage": "keys.request",
                                                "skipped": True, "at": NOW})  # fmt: skip
    keys = aggregates.window(60, now=NOW)[Dimension.INSTANCE]["keys"]
    assert (keys.count, keys.errors, keys.skips) == (4, 1, 1)
    assert dict(keys.failures) == {"error": 1, "unavailable": 1}
    assert keys.p(50) == pytest.approx(2.0, rel=0.01)  # the histogram keeps 2 significant digits


def test_an_error_rate_rule_fires_once_and_resolves_once() -> None:
    aggregates = Aggregates()
    recorder = Recorder()
    rule = AlertRule(name="notes-errors", route="notes", error_rate_above=10, window_s=60)
    rules = AlertRules([rule], aggregates, recorder, live=lambda _: True, instances=[])
    for number in range(10):
        aggregates.add(REQUEST_RESPONDED_SUBJECT, responded(number, 500 if number < 3 else 200, 1.0, at=NOW))
    assert [e.state.value for e in rules.evaluate(now=NOW)] == ["firing"]
    assert rules.evaluate(now=NOW) == []
    assert (
        recorder.emitted[0][0] == "bw.evt.alert.firing"
        and isinstance(alert := recorder.emitted[0][1], AlertEvent)
        and alert.value == 30.0
    )
    assert [e.state.value for e in rules.evaluate(now=NOW + 600)] == ["resolved"]  # the window moved on


def test_replica_and_dead_letter_rules() -> None:
    recorder = Recorder()
    down = AlertRule(name="down", no_live_replica=True)
    dlq = AlertRule(name="dlq", dlq_growing=True, window_s=60)
    rules = AlertRules([down, dlq], Aggregates(), recorder, live=lambda name: name != "keys",
                       instances=["keys", "notes-handler"])  # fmt: skip
    rules.note_dlq_size(3, now=NOW)
    rules.note_dlq_size(5, now=NOW + 5)
    fired = {event.rule: event for event in rules.evaluate(now=NOW + 5)}
    assert fired["down"].subject == "keys"
    assert fired["dlq"].value == 2.0


def transition(number: int, instance: str, old: str, new: str, at: float) -> dict[str, Any]:
    event = BreakerTransition(event_id=f"b{number}", instance=instance, from_state=BreakerState(old),
                              to_state=BreakerState(new), generation=number, replica="r1", at=at)  # fmt: skip
    return event.model_dump(mode="json")


def test_breaker_transitions_count_per_instance_by_to_state_with_the_newest_one() -> None:
    aggregates = Aggregates()
    history = [("closed", "open"), ("open", "half-open"), ("half-open", "open"), ("open", "half-open"),
               ("half-open", "closed")]  # fmt: skip
    for number, (old, new) in enumerate(history):
        aggregates.add(breaker_event_subject(new), transition(number, "keys", old, new, at=NOW - 100 + number))
    aggregates.add(breaker_event_subject("open"), transition(0, "keys", "closed", "open", at=NOW))  # redelivered
    aggregates.add(breaker_event_subject("open"), transition(9, "other", "closed", "open", at=NOW - 3 * BUCKET_S))
    row = aggregates.report(60, now=NOW)["instances"]["keys"]
    assert row["breaker_transitions"] == {"closed": 1, "half-open": 2, "open": 2}
    assert row["last_transition"] == {"from": "half-open", "to": "closed", "at": NOW - 96}
    assert row["count"] == 0  # a transition is not a call
    assert "other" not in aggregates.report(60, now=NOW)["instances"]  # outside the window
    wider = aggregates.report(600, now=NOW)["instances"]["other"]
    assert wider["breaker_transitions"] == {"open": 1}
    assert "breaker_transitions" not in aggregates.report(60, now=NOW)["endpoints"].get("notes", {})


def test_the_report_table_shows_an_instances_breaker_transitions() -> None:
    aggregates = Aggregates()
    aggregates.add(breaker_event_subject("open"), transition(1, "keys", "closed", "open", at=NOW))
    built = tables(aggregates.report(60, now=NOW))
    console = Console(width=300, record=True)
    for table in built:
        console.print(table)
    assert "open 1; last -> open at" in console.export_text()
