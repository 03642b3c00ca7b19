"""What a ``python`` handler function receives: one HTTP request, read-only, without the pipeline's envelope."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from backworks.contracts.envelope import Envelope
from backworks.plugins.python.response import HTTPError

__all__ = ["Headers", "Principal", "Request"]


class Headers(Mapping[str, str]):
    """Request headers by name, any case: ``request.headers["Content-Type"]``; repeated ones with ``get_list``."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = [(name.lower(), value) for name, value in items]
        self._first: dict[str, str] = {}
        for name, value in self._items:
            self._first.setdefault(name, value)

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_list(self, name: str) -> list[str]:
        """Every value of a header sent more than once, in order."""
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True)
class Principal:
    """Who the request acts for, as the authenticating stage (api-key, jwt) established it."""

    consumer: str
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Request:
    """One HTTP request as a ``python`` handler function sees it.

    ``query`` holds the first value of each query parameter, ``query_list`` every value; ``headers`` is
    case-insensitive; ``principal`` is ``None`` unless a security stage authenticated the caller.
    """

    method: str
    path: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    query_list: Mapping[str, list[str]]
    headers: Headers
    body: bytes
    principal: Principal | None
    request_id: str

    def json(self) -> Any:
        """The body parsed as JSON; a body that is not JSON answers the client 400 (``BadRequest``)."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, f"the request body is not valid JSON: {exc}") from None

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Request:
        """The request an envelope carries."""
        query_list: dict[str, list[str]] = {}
        for name, value in envelope.query:
            query_list.setdefault(name, []).append(value)
        principal = None
        if envelope.principal is not None:
            given = envelope.principal
            principal = Principal(given.consumer, tuple(given.scopes), MappingProxyType(dict(given.claims)))
        return cls(
            method=envelope.method,
            path=envelope.path,
            path_params=MappingProxyType(dict(envelope.path_params)),
            query=MappingProxyType({name: values[0] for name, values in query_list.items()}),
            query_list=MappingProxyType(query_list),
            headers=Headers(envelope.headers),
            body=envelope.body,
            principal=principal,
            request_id=envelope.request_id,
        )
