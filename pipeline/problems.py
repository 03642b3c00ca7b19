"""Problem documents a plugin answers with (RFC 9457 ``application/problem+json``), built one way everywhere.

``Respond(problem(401, "Unauthorized", "missing API key", headers={"www-authenticate": 'ApiKey header="x-api-key"'}))``
gives the client the same shape of document the gateway's own errors have (``type``, ``title``, ``status``,
``detail``, and any extra members such as a validator's ``errors``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backworks.contracts.envelope import HttpResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://backworks.dev/problems/"


def problem_type(title: str) -> str:
    """The ``type`` URI of a problem titled ``title``: ``https://backworks.dev/problems/<slug>``."""
    return PROBLEM_TYPE_BASE + title.lower().replace(" ", "-")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **members: Any,
) -> HttpResponse:
    """An ``application/problem+json`` response; ``members`` become extra JSON members (``errors=[...]``)."""
    body: dict[str, Any] = {"type": problem_type(title), "title": title, "status": status, "detail": detail}
    body.update(members)
    response = HttpResponse(status=status, body=json.dumps(body).encode())
    response.set_header("content-type", PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response.set_header(name, value)
    return response
