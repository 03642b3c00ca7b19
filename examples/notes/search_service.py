"""The search upstream of ``GET /search``: a tiny HTTP service the ``proxy`` handler forwards to.

``backworks up`` starts it (``processes:`` in blueprint.yaml) as ``python search_service.py PORT``. It reads the
notes database read-only and answers ``GET /search?q=word`` with the notes whose title or body contain the word,
and ``GET /health``. Standard library only, so it runs wherever Backworks does.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from notes_app import database

HOST = "127.0.0.1"
DEFAULT_PORT = 9181
MAX_RESULTS = 20


def search(words: str) -> list[dict[str, Any]]:
    """Notes whose title or body contain ``words`` (case-insensitive), newest first."""
    path = database()
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT id, title FROM notes WHERE title LIKE ?1 OR body LIKE ?1 ORDER BY id DESC LIMIT ?2",
            (f"%{words}%", MAX_RESULTS),
        ).fetchall()
    return [{"id": row[0], "title": row[1]} for row in rows]


class SearchHandler(BaseHTTPRequestHandler):
    """``GET /search?q=`` and ``GET /health``; anything else is 404."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send(200, {"status": "ok"})
        elif url.path == "/search":
            words = (parse_qs(url.query).get("q") or [""])[0].strip()
            self._send(200, {"query": words, "results": search(words) if words else []})
        else:
            self._send(404, {"error": f"no route {url.path}"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the gateway logs every request already."""


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT
    server = ThreadingHTTPServer((HOST, port), SearchHandler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
