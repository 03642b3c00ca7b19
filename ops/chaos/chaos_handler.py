"""The chaos stack's handler: answers, and appends the request id to ``$BACKWORKS_CHAOS_LEDGER`` first.

One ``O_APPEND`` write per call (atomic for a line this short), so every replica and restart writes to the same
ledger; the report counts a request id found more than once as a request handled twice.
"""

from __future__ import annotations

import os

from backworks.plugins.python import Request

LEDGER_ENV = "BACKWORKS_CHAOS_LEDGER"


def answer(request: Request) -> dict[str, bool]:
    path = os.environ.get(LEDGER_ENV)
    if path:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, f"{request.request_id}\n".encode())
        finally:
            os.close(descriptor)
    return {"ok": True}
