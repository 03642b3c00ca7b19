"""The audit store: every event of ``BW_EVENTS`` as one SQLite record, hash-chained so tampering shows.

Record ``n`` holds ``hash = sha256(prev_hash + "\\n" + subject + "\\n" + canonical_event)`` where ``prev_hash`` is
record ``n - 1``'s hash (``GENESIS`` for the first) and ``canonical_event`` the event's JSON with sorted keys
and no spaces. Altering, inserting or deleting any record but the last breaks the chain at that record, and
``verify`` names it. The searchable columns (route, status, consumer...) are copies of the event's fields:
``verify`` checks them against the hashed event too.

Each event is stored once: ``event_id`` is UNIQUE and an event already there is skipped, so redeliveries, a
restart that reads again what it had not acknowledged, and a consumer recreated from the stream's start add
nothing. Inserts run in ``BEGIN IMMEDIATE`` transactions that read the chain's head inside: two writers on one
file still make one chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    stream_seq INTEGER,
    at REAL,
    request_id TEXT,
    route TEXT,
    status INTEGER,
    consumer TEXT,
    event TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_at ON records (at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
DURABLE_KEY = "durable"
DURABLE_PREFIX = "bw-audit-"
BUSY_TIMEOUT_S = 30.0


def canonical(event: dict[str, Any]) -> str:
    """The one JSON text of an event that its hash covers."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, subject: str, event_json: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{subject}\n{event_json}".encode()).hexdigest()


@dataclass(frozen=True)
class Incoming:
    """One message read from the stream."""

    subject: str
    stream_seq: int | None
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        found = self.event.get("event_id")
        # Events published before event ids existed: the stream sequence identifies them.
        return str(found) if found else f"stream:{self.stream_seq}"


@dataclass(frozen=True)
class Broken:
    """The first record where the chain does not hold."""

    seq: int
    event_id: str
    reason: str


def columns(event: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    """The searchable copies of an event's fields: at, request id, route, status, consumer."""
    at = event.get("at", event.get("dead_at"))
    status = event.get("status")
    return (
        at if isinstance(at, int | float) else None,
        event.get("request_id"),
        event.get("route"),
        status if isinstance(status, int) else None,
        event.get("consumer"),
    )


class AuditStore:
    """One SQLite file of hash-chained event records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Used from one worker thread at a time (``asyncio.to_thread``, one batch after another), never at once.
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def durable(self) -> str:
        """This store's durable consumer name: made once, so a new store reads the stream from its start and a
        restarted service resumes where its store left off."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (DURABLE_KEY,)).fetchone()
        if row is not None:
            return str(row[0])
        name = f"{DURABLE_PREFIX}{uuid.uuid4().hex[:10]}"
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (DURABLE_KEY, name))
        return str(self.db.execute("SELECT value FROM meta WHERE key = ?", (DURABLE_KEY,)).fetchone()[0])

    def append(self, batch: Sequence[Incoming]) -> int:
        """Store the events not already there, chained, in one transaction; returns how many were new."""
        added = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            head = str(row[0]) if row else GENESIS
            for item in batch:
                event_id = item.event_id
                if self.db.execute("SELECT 1 FROM records WHERE event_id = ?", (event_id,)).fetchone():
                    continue  # a redelivery or a re-read: already on record
                text = canonical(item.event)
                digest = chain_hash(head, item.subject, text)
                self.db.execute(
                    "INSERT INTO records (event_id, subject, stream_seq, at, request_id, route, status, consumer,"
                    " event, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (event_id, item.subject, item.stream_seq, *columns(item.event), text, head, digest),
                )
                head = digest
                added += 1
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return added

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def verify(self) -> tuple[int, Broken | None]:
        """Walk the whole chain: (records checked, the first broken link or None)."""
        head = GENESIS
        checked = 0
        rows = self.db.execute(
            "SELECT seq, event_id, subject, at, request_id, route, status, consumer, event, prev_hash, hash"
            " FROM records ORDER BY seq"
        )
        for seq, event_id, subject, at, request_id, route, status, consumer, text, prev_hash, digest in rows:
            if prev_hash != head:
                return checked, Broken(seq, event_id, "its previous hash does not match the record before it "
                                       "(a record before it was removed or inserted)")  # fmt: skip
            if chain_hash(prev_hash, subject, text) != digest:
                return checked, Broken(seq, event_id, "its content does not match its hash (the record was altered)")
            try:
                event = json.loads(text)
            except ValueError:
                return checked, Broken(seq, event_id, "its event is not valid JSON (the record was altered)")
            named = event.get("event_id")
            if (at, request_id, route, status, consumer) != columns(event) or (named and named != event_id):
                return checked, Broken(seq, event_id, "its searchable columns differ from its hashed event")
            head = digest
            checked += 1
        return checked, None

    def query(
        self,
        *,
        since: float | None = None,
        route: str | None = None,
        status: tuple[int, int] | None = None,
        consumer: str | None = None,
        subject_prefix: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records matching every filter given, oldest first: ``status`` is an inclusive range."""
        clauses: list[str] = []
        values: list[Any] = []
        if since is not None:
            clauses.append("at >= ?")
            values.append(since)
        if route is not None:
            clauses.append("route = ?")
            values.append(route)
        if status is not None:
            clauses.append("status BETWEEN ? AND ?")
            values.extend(status)
        if consumer is not None:
            clauses.append("consumer = ?")
            values.append(consumer)
        if subject_prefix is not None:
            clauses.append("subject LIKE ?")
            values.append(subject_prefix.replace("%", "") + "%")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        sql = f"SELECT seq, subject, hash, event FROM records {where} ORDER BY seq{tail}"  # noqa: S608  # only placeholders are interpolated
        for seq, subject, digest, text in self.db.execute(sql, values):
            yield {"seq": seq, "subject": subject, "hash": digest, "event": json.loads(text)}
