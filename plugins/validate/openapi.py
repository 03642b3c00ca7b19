"""Rules from an OpenAPI 3.x operation: its parameters (path item's and its own) and its JSON request body.

The operation is found by ``operationId``. Local ``$ref`` s (``#/components/...``) resolve anywhere in the
document: parameters, request bodies and schemas. OpenAPI 3.1 schemas are JSON Schema 2020-12; 3.0 schemas are
converted first (``nullable: true`` adds ``null`` to the type, boolean ``exclusiveMinimum``/``exclusiveMaximum``
take the bound's value). Not checked: cookie parameters, parameters described by ``content`` instead of
``schema``, and bodies without a JSON media type (form data, files).
"""

from __future__ import annotations

import copy
from typing import Any

from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from backworks.pipeline.media import is_json
from backworks.plugins.validate.rules import Location, Param, Rules, compile_schema
from backworks.plugins.validate.schemas import check, escape, lookup

__all__ = ["DOCUMENT_URI", "UnknownOperation", "operation_rules"]

DOCUMENT_URI = "urn:backworks:openapi"
"""Base URI the document is registered under, so references inside it resolve wherever they are followed."""
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
LOCATIONS = {"path": Location.PATH, "query": Location.QUERY, "header": Location.HEADERS}
IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
"""Header parameters OpenAPI says to ignore (described by other fields of the document)."""


class UnknownOperation(ValueError):
    """The document has no operation with the operationId asked for."""


def _convert_30(node: Any) -> Any:
    """A 3.0 schema tree as JSON Schema 2020-12 (in place)."""
    if isinstance(node, dict):
        if node.get("nullable") is True:
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"].append(None)
        if isinstance(node.get("nullable"), bool):
            del node["nullable"]
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            if isinstance(node.get(exclusive), bool) and node.pop(exclusive) and bound in node:
                node[exclusive] = node.pop(bound)
        for value in node.values():
            _convert_30(value)
    elif isinstance(node, list):
        for item in node:
            _convert_30(item)
    return node


def _deref(document: Any, node: Any, at: str, where: str) -> tuple[Any, str]:
    """``node`` with its (chain of) local ``$ref`` followed, and the pointer where it really is."""
    seen: set[str] = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        reference = node["$ref"]
        if not reference.startswith("#/") or reference in seen:
            raise ValueError(f"{where}: $ref {reference!r} at {at} is not a local reference (#/...) or is circular")
        seen.add(reference)
        try:
            node, at = lookup(document, reference[1:]), reference[1:]
        except KeyError:
            raise ValueError(f"{where}: $ref {reference!r} at {at} points to nothing") from None
    return node, at


def _find(document: dict[str, Any], operation_id: str, where: str) -> tuple[dict[str, Any], str, dict[str, Any], str]:
    """The path item and the operation with ``operation_id``, each with its pointer."""
    known: list[str] = []
    paths = document.get("paths") or {}
    for path, raw in paths.items() if isinstance(paths, dict) else ():
        item, item_at = _deref(document, raw, f"/paths/{escape(str(path))}", where)
        for method in METHODS:
            operation = item.get(method) if isinstance(item, dict) else None
            if isinstance(operation, dict) and "operationId" in operation:
                if operation["operationId"] == operation_id:
                    return item, item_at, operation, f"{item_at}/{method}"
                known.append(str(operation["operationId"]))
    listed = ", ".join(sorted(known)) or "none"
    raise UnknownOperation(f"{where} has no operation with operationId {operation_id!r}; its operationIds: {listed}")


def operation_rules(document: Any, operation_id: str, where: str, *, formats: bool) -> Rules:
    """The rules of the operation ``operation_id`` of an OpenAPI 3.x ``document`` (read from ``where``)."""
    version = str(document.get("openapi", "")) if isinstance(document, dict) else ""
    if not version.startswith("3."):
        raise ValueError(f"{where} is not an OpenAPI 3.x document: its `openapi` field is {version or 'missing'}")
    if version.startswith("3.0"):
        document = _convert_30(copy.deepcopy(document))
    item, item_at, operation, operation_at = _find(document, operation_id, where)
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    declared: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for owner, owner_at in ((item, item_at), (operation, operation_at)):  # the operation's override the path's
        for index, raw in enumerate(owner.get("parameters") or []):
            parameter, at = _deref(document, raw, f"{owner_at}/parameters/{index}", where)
            if isinstance(parameter, dict) and "name" in parameter and "in" in parameter:
                declared[(str(parameter["in"]), str(parameter["name"]))] = (parameter, at)
    params: list[Param] = []
    for (place, name), (parameter, at) in declared.items():
        location = LOCATIONS.get(place)
        if location is None or (location is Location.HEADERS and name.lower() in IGNORED_HEADERS):
            continue
        if "schema" not in parameter:
            if "content" in parameter:
                raise ValueError(f"{where}: parameter {name!r} at {at} is described by `content`; validate checks "
                                 "parameters described by `schema` only")  # fmt: skip
            schema: Any = None
        else:
            schema = parameter["schema"]
            check(schema, f"{where} (parameter {name!r})", document, f"{at}/schema")
        params.append(Param.build(
            location, name, schema, required=bool(parameter.get("required", False)), formats=formats,
            root=document, registry=registry, reference=f"{DOCUMENT_URI}#{at}/schema",
        ))  # fmt: skip
    body, body_required, body_schema = None, False, None
    if "requestBody" in operation:
        request_body, body_at = _deref(document, operation["requestBody"], f"{operation_at}/requestBody", where)
        content = request_body.get("content") or {} if isinstance(request_body, dict) else {}
        media = next((kind for kind in content if is_json(str(kind))), None)
        if media is not None:
            body_required = bool(request_body.get("required", False))
            schema_at = f"{body_at}/content/{escape(str(media))}/schema"
            schema = (content[media] or {}).get("schema", True)
            check(schema, f"{where} (request body)", document, schema_at)
            body_schema = schema
            body = compile_schema({"$ref": f"{DOCUMENT_URI}#{schema_at}"} if schema is not True else True,
                                  registry, formats)  # fmt: skip
    sources = {"openapi": where, "operation": operation_id}
    return Rules(tuple(params), body, body_required, sources, body_schema, document)
