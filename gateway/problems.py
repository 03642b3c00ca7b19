"""``application/problem+json`` responses (RFC 9457) naming the stage and the cause."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

from backworks.contracts.envelope import StageError
from backworks.contracts.types import FailureKind
from backworks.gateway.errors import ProblemError
from backworks.pipeline.problems import PROBLEM_CONTENT_TYPE, problem_type

STATUS_FOR_KIND = {
    FailureKind.ERROR: 502,
    FailureKind.INVALID: 502,
    FailureKind.EXHAUSTED: 502,
    FailureKind.UNAVAILABLE: 503,
    FailureKind.TIMEOUT: 504,
    FailureKind.EXPIRED: 504,
}
TITLE_FOR_KIND = {
    FailureKind.ERROR: "Plugin failed",
    FailureKind.INVALID: "Plugin produced an invalid result",
    FailureKind.UNAVAILABLE: "Plugin unavailable",
    FailureKind.TIMEOUT: "Plugin timed out",
    FailureKind.EXHAUSTED: "Delivery attempts exhausted",
    FailureKind.EXPIRED: "Deadline passed",
}


def problem_response(
    problem: ProblemError, *, instance: str, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    body: dict[str, object] = {
        "type": problem_type(problem.title),
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
        "request_id": request_id,
    }
    if problem.stage:
        body["stage"] = problem.stage
    if problem.cause:
        body["cause"] = problem.cause.value
    return Response(
        json.dumps(body).encode(),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
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
