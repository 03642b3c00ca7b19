"""``validate``: checks a request against JSON Schemas (inline or an OpenAPI operation) before the handler.

Answers, each ``application/problem+json``: 415 when a body schema is given and the body is not JSON
(``application/json`` or a ``+json`` type), 400 when the body is malformed JSON, and 422 listing every violation
(RFC 9457 ``errors``: ``pointer`` such as ``/body/title`` or ``/query/limit``, ``detail`` and the failed JSON
Schema ``keyword``). A valid request goes on unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema.exceptions import ValidationError as SchemaViolation

from backworks.contracts.envelope import Envelope
from backworks.pipeline.media import is_json
from backworks.pipeline.plugin import Action, Continue, RequestProcessor, Respond
from backworks.pipeline.problems import problem
from backworks.plugins.validate.config import ValidateConfig
from backworks.plugins.validate.params import instance_of, values_of
from backworks.plugins.validate.rules import Location, Param
from backworks.plugins.validate.schemas import escape, pointer_of

MAX_QUOTED = 60
"""Characters of a value quoted in a violation at most; a longer value is called "the value"."""
MAX_EXECUTION_TIME = 1.0
"""Seconds per request: checking a body costs ~35 ms per 64 KB (measured), ~0.55 s for a 1 MiB body."""
Violation = dict[str, str]
NOUNS = {Location.PATH: "path parameter", Location.QUERY: "query parameter", Location.HEADERS: "header"}


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _describe(error: SchemaViolation, quote: bool) -> str:
    """jsonschema's message, without the value when it is long or must not be echoed (headers)."""
    message = str(error.message)
    shown = repr(error.instance)
    if message.startswith(shown) and (not quote or len(shown) > MAX_QUOTED):
        message = "the value" + message[len(shown) :]
    return message


def _violations(error: SchemaViolation, base: str, quote: bool) -> list[Violation]:
    at = base + pointer_of(list(error.absolute_path))
    if error.validator == "required" and isinstance(error.instance, dict):
        names: list[Any] = list(error.validator_value) if isinstance(error.validator_value, list) else []
        missing = [n for n in names if n not in error.instance and f"{n!r} is a required" in error.message]
        return [{"pointer": f"{at}/{escape(str(n))}", "detail": "is required", "keyword": "required"} for n in missing]
    return [{"pointer": at, "detail": _describe(error, quote), "keyword": str(error.validator)}]


def _sort_key(error: SchemaViolation) -> list[tuple[int, str]]:
    return [(0, f"{part:020d}") if isinstance(part, int) else (1, str(part)) for part in error.absolute_path]


class Validate(RequestProcessor[ValidateConfig]):
    """Checks the request's body, query, path parameters and headers against JSON Schemas (or an OpenAPI operation).

    415 problem+json when a body schema is given and the body is not JSON, 400 for malformed JSON, 422 listing
    every violation with its JSON pointer (``/body/items/0/name``, ``/query/limit``, ``/headers/x-tenant``).
    """

    name = "validate"
    version = "1.0.0"
    description = "Validates request body, query, path parameters and headers against JSON Schemas or OpenAPI."
    capabilities = ("validate.request",)
    is_critical = True  # a check that could not run must not let the request through unchecked
    max_execution_time = MAX_EXECUTION_TIME
    Config = ValidateConfig

    async def process_request(self, envelope: Envelope) -> Action:
        rules = self.config.rules
        body: Any = None
        has_body = bool(envelope.body.strip())
        if rules.body is not None and has_body:
            content_type = envelope.header("content-type")
            if not is_json(content_type):
                given = f"got {content_type!r}" if content_type else "no Content-Type was given"
                detail = f"the request body must be JSON (Content-Type application/json or a +json type); {given}"
                return Respond(problem(415, "Unsupported media type", detail))
            try:
                body = json.loads(envelope.body, parse_constant=_not_json_constant)
            except (ValueError, UnicodeDecodeError) as exc:
                where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                return Respond(problem(400, "Malformed JSON", f"the request body is not valid JSON{where}: {reason}"))
        violations: list[Violation] = []
        for param in rules.params:
            violations.extend(self._check_param(envelope, param))
        if rules.body is not None:
            if not has_body:
                if rules.body_required:
                    violations.append({"pointer": "/body", "detail": "a JSON request body is required",
                                       "keyword": "required"})  # fmt: skip
            else:
                for error in sorted(rules.body.iter_errors(body), key=_sort_key):
                    violations.extend(_violations(error, "/body", quote=True))
        if not violations:
            return Continue(envelope)
        shown = violations[: self.config.max_errors]
        more = f" (the first {len(shown)} are listed)" if len(shown) < len(violations) else ""
        detail = (
            f"the request has {len(violations)} violation(s){more}: "
            + "; ".join(f"{v['pointer']}: {v['detail']}" for v in shown[:3])
            + ("; ..." if len(shown) > 3 else "")
        )
        return Respond(problem(422, "Invalid request", detail, errors=shown, error_count=len(violations)))

    def _check_param(self, envelope: Envelope, param: Param) -> list[Violation]:
        at = f"/{param.location.value}/{escape(param.name)}"
        values = values_of(envelope, param)
        if not values:
            if param.required:
                return [
                    {"pointer": at, "detail": f"required {NOUNS[param.location]} is missing", "keyword": "required"}
                ]
            return []
        value, why = instance_of(param, values)
        if why is not None:
            return [{"pointer": at, "detail": why, "keyword": "type"}]
        if param.validator is None:
            return []
        quote = param.location is not Location.HEADERS  # header values may be credentials: never echoed
        errors = sorted(param.validator.iter_errors(value), key=_sort_key)
        return [violation for error in errors for violation in _violations(error, at, quote)]
