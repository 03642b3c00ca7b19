"""The last requests answered, each with its per-stage timeline: a bounded ring fed with responded events.

The responded event already carries every stage's duration (``stages``), so the dashboard's timelines need no
``bw.evt.stage.completed`` events (those stay opt-in: they cost a request 2 + its stages events instead of 2).
"""

from __future__ import annotations

from collections import deque
from typing import Any

RECENT_REQUESTS = 50
"""Requests the ring keeps (the newest; older ones are dropped as new ones arrive)."""
PATH_CHARS = 200
"""A request path is cut to this many characters: the ring is small, a path may not be."""
KEPT = ("request_id", "trace_id", "route", "method", "status", "total_ms", "degraded", "failed_stage", "at")


class RecentRequests:
    """A ring of the last ``size`` responded requests, in the order their events arrived."""

    def __init__(self, size: int = RECENT_REQUESTS) -> None:
        self.ring: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, event: dict[str, Any]) -> None:
        """Keep one responded event's request: route, status, durations and its stages' timeline (no body)."""
        stages = [
            {"stage": str(stage.get("stage")), "ms": stage.get("ms")}
            for stage in event.get("stages") or []
            if isinstance(stage, dict)
        ]
        kept = {key: event.get(key) for key in KEPT}
        self.ring.append({**kept, "path": str(event.get("path") or "")[:PATH_CHARS], "stages": stages})

    def since(self, first: float) -> list[dict[str, Any]]:
        """The kept requests answered at or after ``first`` (epoch seconds), newest first."""
        return [r for r in reversed(self.ring) if isinstance(r["at"], int | float) and r["at"] >= first]
