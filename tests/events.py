"""Reading what ``BW_EVENTS`` holds, for tests that check what was published."""

from __future__ import annotations

import json
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from backworks.contracts.names import EVENTS_STREAM, EVENTS_SUBJECTS


async def stream_events(js: JetStreamContext) -> list[tuple[str, dict[str, Any]]]:
    """Every event on ``BW_EVENTS``, oldest first, as (subject, decoded JSON)."""
    info = await js.stream_info(EVENTS_STREAM)
    found: list[tuple[str, dict[str, Any]]] = []
    sequence = info.state.first_seq
    while sequence and sequence <= info.state.last_seq:
        try:
            raw = await js.get_msg(EVENTS_STREAM, sequence, subject=EVENTS_SUBJECTS, next=True)
        except NotFoundError:
            break
        found.append((raw.subject or "", json.loads(raw.data or b"{}")))
        sequence = (raw.seq or sequence) + 1
    return found


def of_request(events: list[tuple[str, dict[str, Any]]], request_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(subject, event) for subject, event in events if event.get("request_id") == request_id]
