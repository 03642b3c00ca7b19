"""The audit store: one record per event however often it arrives, and a chain that names the first altered,
inserted or removed record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backworks.tap.auditstore import AuditStore, Incoming


def events(count: int, start: int = 0) -> list[Incoming]:
    return [
        Incoming(
            subject="bw.evt.request.responded",
            stream_seq=number + 1,
            event={
                "event_id": f"e{number}",
                "route": "notes",
                "status": 200 + number % 3 * 100,
                "at": 1000.0 + number,
                "request_id": f"r{number}",
                "consumer": "alice" if number % 2 else None,
            },
        )
        for number in range(start, start + count)
    ]


def test_redelivered_events_are_stored_once_and_the_chain_verifies(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite3")
    assert store.append(events(5)) == 5
    assert store.append(events(5)) == 0  # a redelivery of the same batch
    assert store.append(events(4, start=3)) == 2  # overlapping: only e5 and e6 are new
    assert store.count() == 7
    assert store.verify() == (7, None)


def test_an_altered_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    store = AuditStore(path)
    store.append(events(6))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE records SET event = replace(event, '\"status\":300', '\"status\":200') WHERE seq = 2")
    checked, broken = store.verify()
    assert checked == 1
    assert broken is not None and (broken.seq, broken.event_id) == (2, "e1")
    assert "altered" in broken.reason


def test_a_column_changed_without_its_event_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    store = AuditStore(path)
    store.append(events(3))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE records SET consumer = 'mallory' WHERE seq = 3")
    _, broken = store.verify()
    assert broken is not None and broken.seq == 3


def test_a_removed_record_breaks_the_chain_at_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    store = AuditStore(path)
    store.append(events(4))
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM records WHERE seq = 2")
    _, broken = store.verify()
    assert broken is not None and broken.seq == 3
    assert "removed or inserted" in broken.reason


def test_queries_filter_by_time_route_status_class_and_consumer(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite3")
    store.append(events(9))
    assert [r["event"]["event_id"] for r in store.query(status=(300, 399))] == ["e1", "e4", "e7"]
    assert [r["event"]["event_id"] for r in store.query(consumer="alice", since=1004.0)] == ["e5", "e7"]
    assert list(store.query(route="other")) == []


def test_the_durable_name_is_made_once_per_store(tmp_path: Path) -> None:
    first = AuditStore(tmp_path / "a.sqlite3").durable()
    assert AuditStore(tmp_path / "a.sqlite3").durable() == first
    assert AuditStore(tmp_path / "b.sqlite3").durable() != first
