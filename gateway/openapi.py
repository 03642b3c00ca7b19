"""The blueprint's HTTP API as an OpenAPI 3.1 document (``backworks openapi``, ``GET /_backworks/openapi.json``).

Every endpoint and method is an operation; path parameters are typed from their convertor (``{id:int}`` is an
integer); every operation lists the problem documents the pipeline itself can answer with (413 for a body over
the gateway's limit, 502/503/504 when a stage fails, is unavailable or times out) and those its handler adds;
a ``mock`` handler's response is described with its status and body as the example. What the chain's plugins add
(security schemes and requirements, parameters and the request body from ``validate``, the problems each can
answer) comes from ``openapi_plugins``. The document is built from the blueprint alone, without the broker.
"""

from __future__ import annotations

import re
from typing import Any

from backworks.contracts.blueprint import Endpoint, handler_instance
from backworks.gateway.openapi_plugins import RESPONSE_HEADERS, Described, describe
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.problems import PROBLEM_CONTENT_TYPE

OPENAPI_VERSION = "3.1.0"
OPENAPI_PATH = "/_backworks/openapi.json"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?\}")
CONVERTOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "str": {"type": "string", "pattern": "^[^/]+$"},
    "path": {"type": "string", "description": "May contain `/`."},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}
"""Starlette's convertors as JSON Schemas (``int`` and ``float`` match digits only: no sign)."""
PIPELINE_PROBLEMS = {
    "502": "A stage of the pipeline failed.",
    "503": "A stage has no live replica, its circuit breaker is open, or the broker is unreachable.",
    "504": "The pipeline did not answer before the endpoint's timeout.",
}
HANDLER_PROBLEMS: dict[str, dict[str, str]] = {
    "python": {"400": "The request body is not valid JSON.", "500": "The handler function raised."},
    "proxy": {
        "502": "The upstream refused the connection, failed, or sent a body too large to carry.",
        "503": "No upstream is available (all ejected or failing health checks).",
        "504": "The upstream did not answer in time.",
    },
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "stage": {"type": "string", "description": "The stage (`instance.phase`) that failed or answered."},
        "cause": {"type": "string"},
    },
}


def openapi_path(path: str) -> str:
    """``/notes/{id:int}`` -> ``/notes/{id}``."""
    return PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _parameters(path: str, described: Described) -> list[dict[str, Any]]:
    """The path's parameters (typed by their convertor and narrowed by a ``validate`` schema), then the others."""
    parameters = []
    for name, convertor in PARAM.findall(path):
        schema: dict[str, Any] = dict(CONVERTOR_SCHEMAS[convertor or "str"])
        checked = described.parameters.pop(("path", name), None)
        if checked is not None and checked["schema"] not in ({}, True):
            schema = {"allOf": [schema, checked["schema"]]}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    for (place, _), parameter in sorted(described.parameters.items()):
        if place != "path":  # a path parameter the route does not have can never be sent
            parameters.append(parameter)
    return parameters


def _problem(status: str, description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    response: dict[str, Any] = {"description": description, "content": {PROBLEM_CONTENT_TYPE: {"schema": schema}}}
    if status in RESPONSE_HEADERS:
        response["headers"] = RESPONSE_HEADERS[status]
    return response


def _mock_response(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    status = str(config.get("status", 200))
    body = config.get("body")
    response: dict[str, Any] = {"description": "The mock's configured response."}
    if body is not None:
        media = config.get("content_type") or ("text/plain" if isinstance(body, str) else "application/json")
        response["content"] = {media: {"example": body}}
    headers = config.get("headers") or {}
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return status, response


def _operation(
    loaded: LoadedBlueprint, name: str, endpoint: Endpoint, method: str, schemes: dict[str, Any]
) -> dict[str, Any]:
    handler = loaded.instances[handler_instance(name)]
    chain = loaded.chain(name)
    described = describe(loaded, chain)
    schemes.update(described.schemes)
    responses: dict[str, Any] = {}
    if handler.cls.name == "mock":
        status, response = _mock_response(endpoint.handler.config)
        responses[status] = response
    else:
        responses["default"] = {"description": f"What the `{handler.cls.name}` handler answers."}
    problems = dict(PIPELINE_PROBLEMS)
    if method in BODY_METHODS:
        problems["413"] = f"The body is larger than {loaded.model.gateway.max_body_bytes} bytes."
    problems.update(HANDLER_PROBLEMS.get(handler.cls.name, {}))
    for status, description in described.problems.items():
        problems[status] = f"{description} Or: {problems[status]}" if status in problems else description
    for status, description in sorted(problems.items()):
        responses.setdefault(status, _problem(status, description))
    operation: dict[str, Any] = {
        "operationId": f"{name}-{method.lower()}",
        "summary": endpoint.description or name,
        "responses": responses,
    }
    operation["description"] = f"Stages: {' -> '.join([*chain, handler.name])}."
    if described.security:
        operation["security"] = described.security
    parameters = _parameters(endpoint.path, described)
    if parameters:
        operation["parameters"] = parameters
    if described.body is not None:
        operation["requestBody"] = described.body
    elif method in BODY_METHODS:
        operation["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    return operation


def build(loaded: LoadedBlueprint, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document (as a dict) of every endpoint of ``loaded``."""
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, Any] = {}
    for name, endpoint in loaded.model.endpoints.items():
        item = paths.setdefault(openapi_path(endpoint.path), {})
        for method in endpoint.methods:
            item[method.lower()] = _operation(loaded, name, endpoint, method, schemes)
    components: dict[str, Any] = {"schemas": {"Problem": PROBLEM_SCHEMA}}
    if schemes:
        components["securitySchemes"] = dict(sorted(schemes.items()))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": loaded.model.name,
            "version": version,
            "description": loaded.model.description or f"The {loaded.model.name} API, served by Backworks.",
        },
        "paths": paths,
        "components": components,
    }
