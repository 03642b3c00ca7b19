"""Shared type aliases, the one enum of failure kinds every contract uses, and the plugin categories."""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any JSON-serialisable value."""

Header: TypeAlias = tuple[str, str]
"""One HTTP header as (lower-case name, value); lists of them keep order and repeats."""

Headers: TypeAlias = list[Header]
QueryParams: TypeAlias = list[tuple[str, str]]


class FailureKind(str, Enum):
    """Why a stage, or the request, did not succeed: on envelopes, events and problem documents (``cause``)."""

    ERROR = "error"
    """The hook raised, or returned ``Fail``."""
    TIMEOUT = "timeout"
    """The hook overran its ``max_execution_time`` (or, at the gateway, a stage held the request too long)."""
    UNAVAILABLE = "unavailable"
    """The stage had no live replica or its circuit breaker was open: nothing was sent to it."""
    INVALID = "invalid"
    """The hook returned something that is not ``Continue``, ``Respond`` or ``Fail``."""
    EXHAUSTED = "exhausted"
    """No replica acknowledged the message in its allowed deliveries: it went to the dead-letter stream."""
    EXPIRED = "expired"
    """The envelope's deadline passed after a redelivery: the work of a replica was lost."""
    BROKER = "broker"
    """Gateway only: the message broker (NATS) is not reachable."""
    PUBLISH = "publish"
    """Gateway only: JetStream did not accept the request's first hand-off."""
    DEADLINE = "deadline"
    """Gateway only: no response before the endpoint's timeout, and no stage could be blamed."""
    GATEWAY = "gateway"
    """Gateway only: the gateway itself failed (a bug)."""

    def __str__(self) -> str:
        return self.value  # in f-strings and subjects too (``bw.evt.stage.<kind>``), as ``StrEnum`` does


class Category(str, Enum):
    """What a plugin does, which fixes the hooks it implements and the phases it serves."""

    REQUEST_PROCESSOR = "request-processor"
    """Reads or changes the request (``process_request``), request phase."""
    RESPONSE_ENHANCER = "response-enhancer"
    """Changes the response (``enhance_response``), response phase, reverse order."""
    HANDLER = "handler"
    """Produces the response (``handle``); the last request-phase stage of an endpoint."""
    SECURITY = "security"
    """``authenticate`` and ``authorize`` in the request phase, ``audit_log`` in the response phase."""
    MONITORING = "monitoring"
    """``collect_metrics`` then ``generate_alerts`` on every finished request (response phase)."""
    ANALYTICS = "analytics"
    """``track_event`` on every finished request (response phase); ``generate_report`` on demand."""
