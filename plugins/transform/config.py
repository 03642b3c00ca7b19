from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from backworks.plugins.transform.pointers import check_pointer

_TOKEN = frozenset("!#$%&'*+-.^_`|~")


def _header_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in _TOKEN for c in name):
        raise ValueError(f"{name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")
    return name.lower()


class HeaderOps(BaseModel):
    """Header edits, applied in this order: remove, rename, set. Names are compared in lower case."""

    model_config = ConfigDict(extra="forbid")

    remove: list[str] = Field(default_factory=list, description="Header names to drop.")
    rename: dict[str, str] = Field(default_factory=dict, description="Old name -> new name (values kept).")
    set: dict[str, str] = Field(default_factory=dict, description="Name -> value (templated); replaces any value.")

    @field_validator("remove")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [_header_name(name) for name in value]

    @field_validator("rename", "set")
    @classmethod
    def _keys(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.field_name == "rename":
            return {_header_name(old): _header_name(new) for old, new in value.items()}
        return {_header_name(name): text for name, text in value.items()}


class QueryOps(BaseModel):
    """Query parameter edits, applied in this order: remove, rename, set. Names are case-sensitive."""

    model_config = ConfigDict(extra="forbid")

    remove: list[str] = Field(default_factory=list, description="Parameter names to drop (every value).")
    rename: dict[str, str] = Field(default_factory=dict, description="Old name -> new name (every value kept).")
    set: dict[str, str] = Field(default_factory=dict, description="Name -> value (templated); replaces every value.")


Pointer = Annotated[str, AfterValidator(check_pointer)]
"""An RFC 6901 JSON pointer into the body, checked at load."""


class BodyOps(BaseModel):
    """JSON body edits with RFC 6901 pointers (``/a/b``, ``~1`` for '/', ``~0`` for '~'): remove, rename, set."""

    model_config = ConfigDict(extra="forbid")

    remove: list[Pointer] = Field(default_factory=list, description="Pointers to delete (absent ones are ignored).")
    rename: dict[Pointer, Pointer] = Field(default_factory=dict, description="Pointer -> pointer to move the value to.")
    set: dict[Pointer, Any] = Field(default_factory=dict, description=(
        "Pointer -> JSON value (strings templated); missing objects on the way are created, `-` appends."))  # fmt: skip

    @property
    def empty(self) -> bool:
        return not (self.remove or self.rename or self.set)


class RequestChanges(BaseModel):
    """Edits of the request before the stages after this one (and the handler) see it."""

    model_config = ConfigDict(extra="forbid")

    headers: HeaderOps = Field(default_factory=HeaderOps, description="Request header edits.")
    query: QueryOps = Field(default_factory=QueryOps, description="Query parameter edits.")
    body: BodyOps = Field(default_factory=BodyOps, description="JSON request body edits.")


class ResponseChanges(BaseModel):
    """Edits of the response on its way back."""

    model_config = ConfigDict(extra="forbid")

    headers: HeaderOps = Field(default_factory=HeaderOps, description="Response header edits.")
    body: BodyOps = Field(default_factory=BodyOps, description="JSON response body edits.")


class TransformConfig(BaseModel):
    """Edits of the request and/or the response.

    String values may use ``{path.x}``, ``{query.x}``, ``{header.x}`` and ``{principal.consumer}``, rendered from the
    request when the edit runs (response edits see the request after every request-phase edit).
    """

    model_config = ConfigDict(extra="forbid")

    request: RequestChanges = Field(default_factory=RequestChanges, description="Request edits (headers, query, body).")
    response: ResponseChanges = Field(default_factory=ResponseChanges, description="Response edits (headers, body).")
