"""What a ``python`` handler function returns, and how it becomes the HTTP response.

A function returns one of:

- a ``dict`` or ``list``: ``200`` with that JSON;
- ``(status, body)`` or ``(status, body, headers)``;
- a ``Response``.

A body is JSON when it is a dict, list, number or bool; text (``text/plain; charset=utf-8``) when a ``str``;
sent as is (``application/octet-stream``) when ``bytes``; empty when ``None``. Raising ``HTTPError`` answers
with a problem document of that status (``raise HTTPError(404, "no note 7")``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backworks.contracts.envelope import HttpResponse

__all__ = ["HTTPError", "Response", "UnsupportedResult", "to_http_response"]

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BYTES_TYPE = "application/octet-stream"
HeaderItems = Mapping[str, str] | Sequence[tuple[str, str]]


class HTTPError(Exception):
    """Raise it in a handler function to answer with a problem document: ``raise HTTPError(404, "no note 7")``."""

    def __init__(self, status: int, detail: str, *, title: str | None = None) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"HTTPError status must be an error status from 400 to 599, got {status!r}")
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title


class UnsupportedResult(TypeError):
    """A handler function returned something that is not a response (a bug in the function: answered 500)."""


@dataclass
class Response:
    """A full response: ``Response({"id": 7}, status=201, headers={"location": "/notes/7"})``."""

    body: Any = None
    status: int = 200
    headers: HeaderItems = field(default_factory=dict)
    content_type: str | None = None
    """Overrides the content type chosen from the body."""


def _encode(body: Any) -> tuple[bytes, str | None]:
    if body is None:
        return b"", None
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), BYTES_TYPE
    if isinstance(body, str):
        return body.encode(), TEXT_TYPE
    if isinstance(body, (dict, list, tuple, int, float, bool)):
        return json.dumps(body).encode(), JSON_TYPE
    raise UnsupportedResult(f"cannot send a body of type {type(body).__name__}; use JSON data, str or bytes")


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise UnsupportedResult(f"status must be an int from 100 to 599, got {value!r}")
    return value


def _build(status: int, body: Any, headers: HeaderItems, content_type: str | None) -> HttpResponse:
    payload, chosen = _encode(body)
    response = HttpResponse(status=_status(status), body=payload)
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        response.headers.append((str(name).lower(), str(value)))
    content_type = content_type or chosen
    if content_type and response.header("content-type") is None:
        response.set_header("content-type", content_type)
    return response


def to_http_response(result: Any) -> HttpResponse:
    """The response a handler function's return value stands for; ``UnsupportedResult`` when it stands for none."""
    if isinstance(result, Response):
        return _build(result.status, result.body, result.headers, result.content_type)
    if isinstance(result, (dict, list)):
        return _build(200, result, {}, None)
    if isinstance(result, tuple) and len(result) in (2, 3):
        headers = result[2] if len(result) == 3 else {}
        if not isinstance(headers, (Mapping, list, tuple)):
            raise UnsupportedResult(f"headers must be a mapping or a list of pairs, got {type(headers).__name__}")
        return _build(result[0], result[1], headers, None)
    raise UnsupportedResult(
        f"returned {type(result).__name__}; return a dict or list (200 JSON), a (status, body) or "
        "(status, body, headers) tuple, or a backworks.plugins.python.Response"
    )
