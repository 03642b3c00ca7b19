"""Factories for what a plugin test needs: request and response envelopes, and validated configs.

Envelopes are built the way the gateway builds them (lower-case header names, query as pairs, bytes body);
configs go through the same JSON Schema and pydantic validation as a blueprint's.
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, SecretBytes, SecretStr

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.configs import validate_config
from backworks.pipeline.errors import PluginConfigError
from backworks.pipeline.plugin import Plugin

DEFAULT_ROUTE = "test"
DEFAULT_CLIENT = "127.0.0.1"
DEFAULT_DEADLINE = 30.0
"""Seconds from now a factory-built envelope stays valid."""

Pairs = Mapping[str, str] | Iterable[tuple[str, str]]
ConfigModel = TypeVar("ConfigModel", bound=BaseModel)
_UNSET: Any = object()


def _pairs(values: Pairs | None, lower: bool = False) -> list[tuple[str, str]]:
    items = values.items() if isinstance(values, Mapping) else (values or [])
    return [(key.lower() if lower else key, str(value)) for key, value in items]


def _body(body: bytes | str, json: Any) -> tuple[bytes, str | None]:
    if json is not _UNSET:
        return jsonlib.dumps(json).encode(), "application/json"
    return (body.encode() if isinstance(body, str) else body), None


def request(
    method: str = "GET",
    path: str = "/",
    *,
    headers: Pairs | None = None,
    query: Pairs | None = None,
    body: bytes | str = b"",
    json: Any = _UNSET,
    path_params: Mapping[str, str] | None = None,
    route: str = DEFAULT_ROUTE,
    client: str | None = DEFAULT_CLIENT,
    request_id: str = "",
) -> Envelope:
    """A request envelope as the gateway would build it. ``json=`` sets the body and its content type."""
    payload, content_type = _body(body, json)
    header_list = _pairs(headers, lower=True)
    if content_type and not any(name == "content-type" for name, _ in header_list):
        header_list.append(("content-type", content_type))
    return Envelope(
        request_id=request_id,
        deadline=time.time() + DEFAULT_DEADLINE,
        route=route,
        method=method.upper(),
        path=path,
        path_params=dict(path_params or {}),
        query=_pairs(query),
        headers=header_list,
        body=payload,
        client=client,
    )


_default_request = request


def response(
    status: int = 200,
    *,
    headers: Pairs | None = None,
    body: bytes | str = b"",
    json: Any = _UNSET,
    request: Envelope | None = None,
) -> Envelope:
    """An envelope whose handler has answered: ``request`` (default: ``GET /``) with a response set."""
    payload, content_type = _body(body, json)
    answer = HttpResponse(status=status, headers=_pairs(headers, lower=True), body=payload)
    if content_type and answer.header("content-type") is None:
        answer.set_header("content-type", content_type)
    envelope = (request or _default_request()).model_copy(deep=True)
    envelope.response = answer
    return envelope


def _plain(value: Any) -> Any:
    """Model data with secrets revealed, so that it can be validated again."""
    if isinstance(value, (SecretStr, SecretBytes)):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def config(
    plugin: type[Plugin[Any]], values: BaseModel | Mapping[str, Any] | None = None, **overrides: Any
) -> BaseModel:
    """A validated config for ``plugin``: from a model, a mapping and/or keyword values.

    Raises ``PluginConfigError`` listing every problem (with its path) when the values break the schema.
    """
    if isinstance(values, BaseModel):
        if not overrides:
            return values
        base: dict[str, Any] = _plain(values.model_dump())
    else:
        base = dict(values or {})
    data = {**base, **overrides}
    model, problems = validate_config(plugin.Config, data)
    if model is None:
        listed = "; ".join(
            f"/{'/'.join(str(part) for part in problem.path)}: {problem.message}" for problem in problems
        )
        raise PluginConfigError(f"invalid config for plugin {getattr(plugin, 'name', plugin.__name__)!r}: {listed}")
    return model
