"""Errors of the HTTP edge (see ``backworks.contracts.errors`` for the whole tree)."""

from __future__ import annotations

from backworks.contracts.errors import BackworksError
from backworks.contracts.types import FailureKind
from backworks.gateway.connections import EdgeEvent


class GatewayError(BackworksError):
    """Root of the gateway's errors."""


class ProblemError(GatewayError):
    """An HTTP problem to send to the client as ``application/problem+json`` (RFC 9457)."""

    def __init__(
        self, status: int, title: str, detail: str, *, stage: str | None = None, cause: FailureKind | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.stage = stage
        self.cause = cause


class RequestRefused(GatewayError):
    """A request broke one of the edge's limits while its head was parsed; answered before the app sees it.

    Raised from a parser callback to stop parsing at once (httptools hands it back as the context of an
    ``HttpParserCallbackError``).
    """

    def __init__(self, status: int, title: str, detail: str, event: EdgeEvent) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.event = event
