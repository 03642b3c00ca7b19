"""JSON Schemas as ``validate`` uses them: checked when the blueprint loads, with local ``$ref`` s only.

A schema is a JSON Schema Draft 2020-12 document. It is checked against the draft's metaschema and every
``$ref`` in it must be local (``#/$defs/...``) and resolve, so a broken schema is a ``backworks validate``
error instead of a 500 at the first request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

__all__ = ["METASCHEMA", "check", "escape", "items_of", "lookup", "pointer_of", "types_of"]

METASCHEMA = "https://json-schema.org/draft/2020-12/schema"
"""The dialect every schema is written in (OpenAPI 3.1's; 3.0 schemas are converted, see ``openapi``)."""


_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def escape(token: str) -> str:
    """A JSON pointer token (RFC 6901: ``~`` as ``~0``, ``/`` as ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer_of(parts: list[Any] | tuple[Any, ...]) -> str:
    """An RFC 6901 JSON pointer from path parts."""
    return "".join(f"/{escape(str(part))}" for part in parts)


def lookup(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` (``/a/b``, RFC 6901) in ``document``; ``KeyError`` when there is none."""
    node = document
    if pointer == "":
        return node
    for raw in pointer.lstrip("/").split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise KeyError(pointer)
    return node


def _references(node: Any, at: str) -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in a schema with the pointer where it appears."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield at, value
            else:
                yield from _references(value, f"{at}/{escape(str(key))}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _references(item, f"{at}/{index}")


def check(schema: Any, where: str, root: Any | None = None, root_at: str = "") -> None:
    """``ValueError`` naming ``where`` and the pointer inside it when ``schema`` is not usable.

    ``root`` is the document local references resolve against (the schema itself by default; the whole
    OpenAPI document for its schemas), ``root_at`` the schema's own pointer inside ``root``. Referenced schemas
    are checked too, transitively.
    """
    document = schema if root is None else root
    pending, seen = [(schema, root_at)], {root_at}
    while pending:
        node, node_at = pending.pop()
        errors = list(_META.iter_errors(node))
        if errors:
            error = best_match(errors)
            at = node_at + pointer_of(list(error.absolute_path))
            raise ValueError(f"{where} is not a valid JSON Schema at {at or '/'}: {error.message}")
        for at, reference in _references(node, node_at):
            if not reference.startswith("#"):
                raise ValueError(
                    f"{where}: $ref {reference!r} at {at} is not local; only references inside the same document "
                    "(#/$defs/...) are supported: copy the definition under $defs"
                )
            if not (reference.startswith("#/") or reference == "#") or reference[1:] in seen:
                continue  # an anchor (#name) is resolved by the validator; a pointer already checked
            try:
                target = lookup(document, reference[1:])
            except KeyError:
                raise ValueError(f"{where}: $ref {reference!r} at {at} points to nothing") from None
            seen.add(reference[1:])
            pending.append((target, reference[1:]))


def types_of(schema: Any, root: Any, depth: int = 0) -> tuple[str, ...]:
    """The JSON types a schema declares (following local ``$ref`` s), for coercing string parameters."""
    if not isinstance(schema, dict) or depth > 16:
        return ()
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#"):
        try:
            return types_of(lookup(root, reference[1:]), root, depth + 1)
        except KeyError:
            return ()
    kind = schema.get("type")
    if isinstance(kind, str):
        return (kind,)
    if isinstance(kind, list):
        return tuple(str(k) for k in kind)
    return ()


def items_of(schema: Any, root: Any, depth: int = 0) -> Any:
    """The ``items`` schema of an array schema (following local ``$ref`` s), or ``None``."""
    if not isinstance(schema, dict) or depth > 16:
        return None
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#"):
        try:
            return items_of(lookup(root, reference[1:]), root, depth + 1)
        except KeyError:
            return None
    return schema.get("items")
