"""The notes handlers: each endpoint's ``python`` handler is one function here, storing notes in SQLite.

The database is ``notes.sqlite3`` in Backworks' state directory (``$BACKWORKS_STATE_DIR``, default ``./.backworks``),
so every replica of every handler on this machine shares it. Functions are plain ``def``: Backworks runs them
in a thread pool, so each call opens its own short-lived connection (SQLite connections are not shared between
threads) and WAL mode lets readers and one writer work at the same time.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backworks.plugins.python import HTTPError, Request, Response

STATE_DIR_ENV = "BACKWORKS_STATE_DIR"
DEFAULT_STATE_DIR = ".backworks"
DB_NAME = "notes.sqlite3"
DEFAULT_LIMIT = 20
BUSY_TIMEOUT_S = 5.0
MAX_ID = 2**63 - 1
"""SQLite's largest integer: a larger id (the route takes any digits) can name no note."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


def database() -> Path:
    """Where the notes live (the search service reads the same file)."""
    folder = Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / DB_NAME


def _connect() -> sqlite3.Connection:
    connection = sqlite3.connect(database(), timeout=BUSY_TIMEOUT_S)
    connection.row_factory = sqlite3.Row
    return connection


def startup() -> None:
    """Called once per process before the first request: create the table."""
    with _connect() as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(SCHEMA)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _note(row: sqlite3.Row) -> dict[str, Any]:
    note = dict(row)
    note["tags"] = [tag for tag in note["tags"].split(",") if tag]
    return note


def _find(connection: sqlite3.Connection, note_id: int) -> sqlite3.Row:
    row = None
    if note_id <= MAX_ID:
        row = connection.execute("SELECT * FROM notes WHERE id = ?", (note_id,)).fetchone()
    if row is None:
        raise HTTPError(404, f"there is no note {note_id}", title="Note not found")
    return row


def _owned(connection: sqlite3.Connection, note_id: int, request: Request) -> sqlite3.Row:
    row = _find(connection, note_id)
    consumer = request.principal.consumer if request.principal else None
    if row["owner"] != consumer:
        raise HTTPError(403, f"note {note_id} belongs to {row['owner']}; only its owner may change it")
    return row


def list_notes(request: Request) -> dict[str, Any]:
    """``GET /notes?limit=&tag=``: the newest notes first (``validate`` checked the query's types)."""
    limit = int(request.query.get("limit", DEFAULT_LIMIT))
    tag = request.query.get("tag")
    with _connect() as connection:
        if tag:
            rows = connection.execute(
                "SELECT * FROM notes WHERE ',' || tags || ',' LIKE ? ORDER BY id DESC LIMIT ?", (f"%,{tag},%", limit)
            ).fetchall()
        else:
            rows = connection.execute("SELECT * FROM notes ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return {"notes": [_note(row) for row in rows], "count": len(rows)}


def get_note(request: Request) -> dict[str, Any]:
    """``GET /notes/{id}``."""
    with _connect() as connection:
        return _note(_find(connection, int(request.path_params["id"])))


def create_note(request: Request) -> Response:
    """``POST /notes``: 201 with the note and its ``Location``; the caller (from the API key) owns it."""
    data = request.json()
    owner = request.principal.consumer if request.principal else "anonymous"
    now = _now()
    with _connect() as connection:
        cursor = connection.execute(
            "INSERT INTO notes (title, body, tags, owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (data["title"], data.get("body", ""), ",".join(data.get("tags", [])), owner, now, now),
        )
        note = _note(_find(connection, int(cursor.lastrowid or 0)))
    return Response(note, status=201, headers={"location": f"/notes/{note['id']}"})


def replace_note(request: Request) -> dict[str, Any]:
    """``PUT /notes/{id}``: a new title, body and tags, by the note's owner only."""
    note_id = int(request.path_params["id"])
    data = request.json()
    with _connect() as connection:
        _owned(connection, note_id, request)
        connection.execute(
            "UPDATE notes SET title = ?, body = ?, tags = ?, updated_at = ? WHERE id = ?",
            (data["title"], data["body"], ",".join(data.get("tags", [])), _now(), note_id),
        )
        return _note(_find(connection, note_id))


def delete_note(request: Request) -> tuple[int, None]:
    """``DELETE /notes/{id}``: 204, by the note's owner only."""
    note_id = int(request.path_params["id"])
    with _connect() as connection:
        _owned(connection, note_id, request)
        connection.execute("DELETE FROM notes WHERE id = ?", (note_id,))
    return 204, None


def stats(request: Request) -> dict[str, Any]:
    """``GET /admin/stats``: notes per owner, for whoever the admin token names."""
    with _connect() as connection:
        rows = connection.execute("SELECT owner, COUNT(*) AS notes FROM notes GROUP BY owner ORDER BY owner").fetchall()
    return {
        "admin": request.principal.consumer if request.principal else None,
        "notes_per_owner": {row["owner"]: row["notes"] for row in rows},
        "total": sum(row["notes"] for row in rows),
    }
