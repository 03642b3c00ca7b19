"""``application/problem+json`` responses (RFC 9457) naming the stage and the cause."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

from backworks.contracts.envelope import StageError
from backworks.gateway.errors import ProblemError

PROBLEM_TYPE_BASE = "https://backworks.dev/problems/"
STATUS_FOR_KIND = {"error": 502, "invalid": 502, "exhausted": 502, "unavailable": 503, "timeout": 504, "expired": 504}
TITLE_FOR_KIND = {
    "error": "Plugin failed",
    "invalid": "Plugin produced an invalid result",
    "unavailable": "Plugin unavailable",
    "timeout": "Plugin timed out",
    "exhausted": "Delivery attempts exhausted",
    "expired": "Deadline passed",
}


def slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def problem_response(
    problem: ProblemError, *, instance: str, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + slug(problem.title),
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
        "request_id": request_id,
    }
    if problem.stage:
        body["stage"] = problem.stage
    if problem.cause:
        body["cause"] = problem.cause
    return Response(
        json.dumps(body).encode(),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=dict(headers or {}),
    )


def from_stage_error(error: StageError) -> ProblemError:
    """The problem a client sees when a critical stage failed."""
    return ProblemError(
        STATUS_FOR_KIND.get(error.kind, 502),
        TITLE_FOR_KIND.get(error.kind, "Plugin failed"),
        f"stage {error.stage} failed: {error.message}",
        stage=error.stage,
        cause=error.kind,
    )
