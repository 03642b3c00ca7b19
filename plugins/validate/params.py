"""Parameter values as the request carries them (strings) turned into the JSON values their schemas expect.

Query, path and header values are text. As OpenAPI does, a value is coerced to the type its schema declares
before it is validated: ``"5"`` is the integer 5 for ``{type: integer}``, ``"true"`` the boolean ``true``. A
value that does not fit stays a string, so the schema reports it (``'five' is not of type 'integer'``). An
array parameter takes every value of a repeated query parameter (``?tag=a&tag=b``) or the comma-separated
items of a path or header value (OpenAPI's default ``form``/``simple`` styles).
"""

from __future__ import annotations

import re
from typing import Any

from backworks.contracts.envelope import Envelope
from backworks.plugins.validate.rules import Location, Param

__all__ = ["coerce", "instance_of", "values_of"]

_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}


def values_of(envelope: Envelope, param: Param) -> list[str]:
    """Every value the request gives ``param`` (none when absent)."""
    if param.location is Location.PATH:
        value = envelope.path_params.get(param.name)
        return [] if value is None else [value]
    pairs = envelope.query if param.location is Location.QUERY else envelope.headers
    return [value for key, value in pairs if key == param.name]


def coerce(value: str, types: tuple[str, ...]) -> Any:
    """``value`` as the first of ``types`` it fits (unchanged when none fits or no type is declared)."""
    for kind in types:
        try:
            if kind == "integer" and _INTEGER.fullmatch(value):
                return int(value)
            if kind == "number" and _NUMBER.fullmatch(value):
                number = float(value)
                return int(number) if _INTEGER.fullmatch(value) else number
        except ValueError:  # more digits than int() converts: leave it to the schema (a string)
            continue
        if kind == "boolean" and value in _BOOLEANS:
            return _BOOLEANS[value]
        if kind == "null" and value in ("", "null"):
            return None
        if kind == "string":
            return value
    return value


def instance_of(param: Param, values: list[str]) -> tuple[Any, str | None]:
    """The JSON value to validate for ``param`` from its non-empty ``values``, or why there is none."""
    if "array" in param.types:
        if param.location is Location.QUERY:
            items = values
        else:
            items = [item.strip() for value in values for item in value.split(",")]
        return [coerce(item, param.item_types) for item in items], None
    if len(values) > 1:
        return None, f"given {len(values)} times; one value is expected (declare an array schema to accept several)"
    return coerce(values[0], param.types), None
