"""What the fleet's circuit breakers keep in the ``bw_breakers`` KV bucket (records v1) and how keys are laid out.

Keys, for a plugin instance ``<instance>`` (a blueprint name: already a valid key token) and a writer
``<writer>`` (a replica id made key-safe by :func:`key_token`)::

    <instance>.state             StateRecord  closed/open and the generation; written with CAS, only on transitions
    <instance>.count.<writer>    CountRecord  one writer's failures and success resets in the current generation;
                                              written only by that writer (plain put, coalesced), so no hot key
    <instance>.probe.<slot>      ProbeRecord  half-open probe slot ``0 <= slot < half_open_probes``; claimed with
                                              create/CAS, free again when its generation is over or its lease ran out

Times are seconds since the Unix epoch (``time.time()``): no time zone can shift them.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RECORD_VERSION = 1
STATE = "state"
COUNT = "count"
PROBE = "probe"
_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")


class BreakerState(str, Enum):
    """What a breaker lets through, as every process of the fleet sees it."""

    CLOSED = "closed"
    """Calls go through; failures are counted."""
    OPEN = "open"
    """Calls are refused at once, without sending anything, until the reset timeout has passed."""
    HALF_OPEN = "half-open"
    """The reset timeout has passed: a bounded number of probe calls decide whether to close or reopen."""


class StoredState(str, Enum):
    """What the state key holds. Half-open is never stored: it is an open state whose reset time has come."""

    CLOSED = "closed"
    """Closed since ``at``; counting failures of this generation."""
    OPEN = "open"
    """Opened at ``opened_at``; half-open from ``reset_at`` on."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1
    """Record format version (``RECORD_VERSION``)."""


class StateRecord(_Record):
    """The state of one instance's breaker. Each transition writes generation + 1 with CAS on the previous revision."""

    state: StoredState
    generation: int = Field(ge=0)
    opened_at: float | None = None
    reset_at: float | None = None
    at: float
    by: str
    """Writer that made the transition."""
    reason: str = ""


class CountRecord(_Record):
    """One writer's view of the failure streak in one generation.

    ``failures`` is the writer's own failure total in the generation (it only grows); ``resets`` is, for every
    writer, the failure total the writer had seen when it last recorded a success: those failures are no longer
    consecutive.
    """

    generation: int = Field(ge=0)
    writer: str
    failures: int = Field(default=0, ge=0)
    resets: dict[str, int] = Field(default_factory=dict)
    at: float


class ProbeRecord(_Record):
    """A claimed half-open probe slot."""

    generation: int = Field(ge=0)
    writer: str
    claimed_at: float


def key_token(name: str) -> str:
    """``name`` as one KV key token (replica ids may hold dots from a host name)."""
    return _UNSAFE.sub("_", name) or "_"


def state_key(instance: str) -> str:
    return f"{instance}.{STATE}"


def count_key(instance: str, writer: str) -> str:
    return f"{instance}.{COUNT}.{writer}"


def probe_key(instance: str, slot: int) -> str:
    return f"{instance}.{PROBE}.{slot}"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """``(instance, kind, rest)`` of a breaker key, or None for a key this layout does not know."""
    parts = key.split(".", 2)
    if len(parts) == 2 and parts[1] == STATE:
        return parts[0], STATE, ""
    if len(parts) == 3 and parts[1] in (COUNT, PROBE):
        return parts[0], parts[1], parts[2]
    return None


__all__ = [
    "BreakerState",
    "CountRecord",
    "ProbeRecord",
    "StateRecord",
    "StoredState",
    "count_key",
    "key_token",
    "parse_key",
    "probe_key",
    "state_key",
]
