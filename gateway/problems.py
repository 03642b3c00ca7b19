"""``application/problem+json`` responses (RFC 9457) naming the stage and the cause.

A failed stage's problem says which stage failed and a short cause (``CAUSE_FOR_KIND``); the plugin's own message
(an exception's text, a ``Fail`` reason) goes to the log with the request id, never to the client, unless the
blueprint sets ``gateway.expose_errors: true`` (for development). The message is masked either way: a plugin's
config secrets and the request's credentials never appear in it.
"""

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

CAUSE_FOR_KIND = {
    FailureKind.ERROR: "the plugin failed",
    FailureKind.INVALID: "the plugin returned an invalid result",
    FailureKind.UNAVAILABLE: "the plugin is unavailable (no live replica, or its circuit breaker is open)",
    FailureKind.TIMEOUT: "the plugin timed out",
    FailureKind.EXHAUSTED: "no replica finished it within its delivery attempts",
    FailureKind.EXPIRED: "its deadline passed while it was redelivered",
}
"""What a client is told about a failed stage, by failure kind."""
DEFAULT_CAUSE = "the plugin failed"


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


def from_stage_error(error: StageError, *, expose: bool = False) -> ProblemError:
    """The problem a client sees when a critical stage failed: the stage and a short cause.

    ``expose`` (the blueprint's ``gateway.expose_errors``) adds the plugin's own (masked) message, for development.
    """
    detail = f"stage {error.stage} failed: {CAUSE_FOR_KIND.get(error.kind, DEFAULT_CAUSE)}"
    if expose and error.message:
        detail = f"{detail}: {error.message}"
    return ProblemError(
        STATUS_FOR_KIND.get(error.kind, 502),
        TITLE_FOR_KIND.get(error.kind, "Plugin failed"),
        detail,
        stage=error.stage,
        cause=error.kind,
    )
