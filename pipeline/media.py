"""Media types as plugins test them (``Content-Type`` values)."""

from __future__ import annotations

__all__ = ["JSON_MEDIA_TYPE", "is_json", "media_type"]

JSON_MEDIA_TYPE = "application/json"


def media_type(content_type: str | None) -> str:
    """The bare media type of a ``Content-Type`` value, lower case, without parameters (``""`` when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` and any ``+json`` type (``application/problem+json``), with parameters."""
    kind = media_type(content_type)
    return kind == JSON_MEDIA_TYPE or (kind.endswith("+json") and "/" in kind)
