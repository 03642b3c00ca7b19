"""``transform``: edits request and response headers, query parameters and JSON bodies, with templated values.

Each part applies its edits in the order remove, rename, set. Body edits need a JSON body (``application/json``
or ``+json``); an empty body is left alone. On the request, a body that is not JSON is answered with 415, a
malformed one with 400, an edit the body's shape does not allow (``/user/name`` when ``user`` is a string) with
400, all problem+json. On the response, the same problems fail the stage (its criticality decides), since the
response is the API's own. Response edits apply only to requests that went through this stage: an answer given
before it (a preflight, a 401 from an earlier stage) is left as it was.
"""

from __future__ import annotations

import json
from typing import Any

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import Phase
from backworks.contracts.types import Headers, QueryParams
from backworks.pipeline.media import is_json
from backworks.pipeline.plugin import Action, Continue, Fail, RequestProcessor, Respond
from backworks.pipeline.problems import problem
from backworks.pipeline.templates import render, render_value
from backworks.plugins.transform.config import BodyOps, HeaderOps, QueryOps, TransformConfig
from backworks.plugins.transform.pointers import PointerError, remove, rename, set_value

_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\0")


class TransformError(ValueError):
    """An edit that cannot be made; ``status`` is the answer when it is the request's fault."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def _header_value(name: str, template: str, envelope: Envelope) -> str:
    value = render(template, envelope)
    if any(c in value for c in _FORBIDDEN_IN_HEADERS):
        raise TransformError(400, "Cannot transform request", f"the value of header {name!r} would contain a line "
                             "break or NUL (from a templated request value)")  # fmt: skip
    return value


def _renamed(pairs: list[tuple[str, str]], renames: dict[str, str]) -> list[tuple[str, str]]:
    """``pairs`` with each present old name renamed; values already under the new name are replaced."""
    present = {k for k, _ in pairs}
    replaced = {new for old, new in renames.items() if old in present}
    return [(renames.get(k, k), v) for k, v in pairs if k in renames or k not in replaced]


def edit_headers(headers: Headers, ops: HeaderOps, envelope: Envelope) -> Headers:
    """``headers`` with ``ops`` applied (remove, rename, set), values rendered from ``envelope``."""
    if ops.remove:
        drop = set(ops.remove)
        headers = [(k, v) for k, v in headers if k not in drop]
    if ops.rename:
        headers = _renamed(headers, ops.rename)
    for name, template in ops.set.items():
        value = _header_value(name, template, envelope)
        headers = [(k, v) for k, v in headers if k != name]
        headers.append((name, value))
    return headers


def edit_query(query: QueryParams, ops: QueryOps, envelope: Envelope) -> QueryParams:
    """``query`` with ``ops`` applied (remove, rename, set), values rendered from ``envelope``."""
    if ops.remove:
        drop = set(ops.remove)
        query = [(k, v) for k, v in query if k not in drop]
    if ops.rename:
        query = _renamed(query, ops.rename)
    for name, template in ops.set.items():
        value = render(template, envelope)
        query = [(k, v) for k, v in query if k != name]
        query.append((name, value))
    return query


def edit_body(body: bytes, content_type: str | None, ops: BodyOps, envelope: Envelope, what: str) -> bytes:
    """The JSON ``body`` with ``ops`` applied (remove, rename, set); ``TransformError`` when it cannot be."""
    if not body.strip():
        return body
    if not is_json(content_type):
        given = repr(content_type) if content_type else "no Content-Type"
        raise TransformError(415, "Unsupported media type",
                             f"{what} body must be JSON (application/json or a +json type) to be transformed; "
                             f"got {given}")  # fmt: skip
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransformError(400, "Malformed JSON", f"{what} body is not valid JSON: {exc}") from None
    try:
        for pointer in ops.remove:
            _in_container(document, pointer, what)
            remove(document, pointer)
        for source, target in ops.rename.items():
            _in_container(document, source, what)
            rename(document, source, target)
        for pointer, value in ops.set.items():
            _in_container(document, pointer, what)
            set_value(document, pointer, render_value(value, envelope))
    except PointerError as exc:
        raise TransformError(400, "Cannot transform request", f"{what} body: {exc}") from None
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _in_container(document: Any, pointer: str, what: str) -> None:
    if not isinstance(document, (dict, list)):
        raise PointerError(f"{pointer}: the {what} body is a single JSON value, not an object or array")


def _drop_length(headers: Headers) -> Headers:
    """The headers without ``content-length``, which no longer matches an edited body."""
    return [(k, v) for k, v in headers if k != "content-length"]


class Transform(RequestProcessor[TransformConfig]):
    """Edits request headers, query parameters and JSON body, and response headers and JSON body.

    Values are templated with ``{path.x}``, ``{query.x}``, ``{header.x}`` and ``{principal.consumer}``. Request
    body problems are answered with 415 (not JSON), 400 (malformed JSON, an edit the body's shape does not allow).
    """

    name = "transform"
    version = "1.0.0"
    description = "Edits request and response headers, query parameters and JSON bodies (RFC 6901 pointers)."
    capabilities = ("transform.request", "transform.response", "templating")
    is_critical = True  # skipped, a header meant to be removed (or set) would pass as it was
    Config = TransformConfig

    async def process_request(self, envelope: Envelope) -> Action:
        changes = self.config.request
        try:
            # Every value renders from the request as it arrived here, whatever the edits before it changed.
            original = envelope.model_copy()
            if not changes.body.empty:
                body = edit_body(envelope.body, envelope.header("content-type"), changes.body, original, "the request")
                if body is not envelope.body:
                    envelope.body = body
                    envelope.headers = _drop_length(envelope.headers)
            envelope.headers = edit_headers(envelope.headers, changes.headers, original)
            envelope.query = edit_query(envelope.query, changes.query, original)
        except TransformError as exc:
            return Respond(problem(exc.status, exc.title, exc.detail))
        return Continue(envelope)

    async def process_response(self, envelope: Envelope) -> Action:
        response = envelope.response
        if response is None or not self._reached(envelope):
            return Continue(envelope)
        changes = self.config.response
        try:
            if not changes.body.empty:
                body = edit_body(response.body, response.header("content-type"), changes.body, envelope, "the response")
                if body is not response.body:
                    response.body = body
                    response.headers = _drop_length(response.headers)
            response.headers = edit_headers(response.headers, changes.headers, envelope)
        except TransformError as exc:
            return Fail(f"cannot transform the response: {exc.detail}")
        return Continue(envelope)

    def _reached(self, envelope: Envelope) -> bool:
        """Whether the request went through this instance's request stage (not answered before it)."""
        label = f"{self.instance}.{Phase.REQUEST.value}"
        return any(timing.stage == label for timing in envelope.timings)
