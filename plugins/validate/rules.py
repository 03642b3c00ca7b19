"""What one ``validate`` instance checks: its parameters and its body, each with a compiled validator.

Built once when the config is validated (inline schemas or an OpenAPI operation), used for every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry

from backworks.plugins.validate.schemas import items_of, types_of

__all__ = ["Location", "Param", "Rules", "compile_schema"]


class Location(str, Enum):
    """Where in the request a parameter is; also the first token of a violation's pointer."""

    PATH = "path"
    """A path parameter of the route template (``/notes/{id}``)."""
    QUERY = "query"
    """A query string parameter."""
    HEADERS = "headers"
    """A request header (names compared in lower case)."""


def compile_schema(schema: Any, registry: Registry[Any] | None, formats: bool) -> Draft202012Validator:
    """A Draft 2020-12 validator for ``schema``; ``formats`` asserts ``format`` (``email``, ``uuid``, ``date``...)."""
    checker = Draft202012Validator.FORMAT_CHECKER if formats else None
    if registry is None:
        return Draft202012Validator(schema, format_checker=checker)
    return Draft202012Validator(schema, registry=registry, format_checker=checker)


@dataclass(frozen=True)
class Param:
    """One parameter: its name, whether it must be present and its schema's validator."""

    location: Location
    name: str
    required: bool
    validator: Draft202012Validator | None
    """``None``: any value (only presence is checked)."""
    types: tuple[str, ...] = ()
    """JSON types the schema declares: a string value is coerced to the first that fits (``"5"`` -> 5)."""
    item_types: tuple[str, ...] = ()
    """For an array parameter (every value of a repeated query parameter), the types of its items."""
    schema: Any = field(default=None, compare=False)
    """The schema as written (``None``: any value), to describe the parameter (``backworks openapi``)."""
    root: Any = field(default=None, compare=False)
    """The document the schema's local ``$ref`` s point into (the schema itself, or the OpenAPI document)."""

    @classmethod
    def build(
        cls,
        location: Location,
        name: str,
        schema: Any,
        *,
        required: bool,
        formats: bool,
        root: Any = None,
        registry: Registry[Any] | None = None,
        reference: str | None = None,
    ) -> Param:
        """A parameter checked against ``schema``; local references resolve in ``root`` (the schema by default).

        With ``reference`` (a URI in ``registry`` pointing at ``schema``), the validator follows that reference, so
        references inside the schema resolve against the document it lives in (an OpenAPI document).
        """
        document = schema if root is None else root
        checked = {"$ref": reference} if reference is not None else schema
        return cls(
            location=location,
            name=name.lower() if location is Location.HEADERS else name,
            required=required or location is Location.PATH,
            validator=compile_schema(checked, registry, formats) if schema not in (None, True, {}) else None,
            types=types_of(schema, document),
            item_types=types_of(items_of(schema, document), document),
            schema=schema,
            root=document,
        )


@dataclass(frozen=True)
class Rules:
    """Everything one instance checks."""

    params: tuple[Param, ...] = ()
    body: Draft202012Validator | None = None
    """The body's validator; ``None``: the body is not checked (nor its content type)."""
    body_required: bool = True
    """An empty body is a violation (``/body``) when the body is checked."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where the rules come from, for messages (``{"openapi": "api.yaml", "operation": "createNote"}``)."""
    body_schema: Any = None
    """The body's schema as written, to describe the request body (``backworks openapi``)."""
    body_root: Any = None
    """The document the body schema's local ``$ref`` s point into."""
