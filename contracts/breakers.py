"""What the fleet's circuit breakers keep in the ``bw_breakers`` KV bucket (records v1) and how keys are laid out.

Keys, for a plugin instance ``<instance>`` (a blueprint name: already a valid key token) and a writer
``<writer>`` (a replica id made key-safe by :func:`key_token`)::

    <instance>.state             StateRecord  closed/open and the generation; written with CAS, only on transitions
    <instance>.window.<writer>   WindowRecord one writer's share of the sliding window in the current generation;
                                              written only by that writer (plain put, debounced), so no hot key
    <instance>.probe.<slot>      ProbeRecord  half-open probe slot ``0 <= slot < permitted_calls_in_half_open``;
                                              claimed with create/CAS, then CAS-updated with the probe's outcome;
                                              free again when its generation is over or an unfinished claim's
                                              lease ran out

Times are seconds since the Unix epoch (``time.time()``): no time zone can shift them.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RECORD_VERSION = 1
STATE = "state"
WINDOW = "window"
FAILED = 1
"""Outcome bit: the call failed."""
SLOW = 2
"""Outcome bit: the call took ``slow_call_duration_ms`` or longer (successful or not)."""
PROBE = "probe"
_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")


class BreakerState(str, Enum):
    """What a breaker lets through, as every process of the fleet sees it."""

    CLOSED = "closed"
    """Calls go through; their outcomes fill the sliding window."""
    OPEN = "open"
    """Calls are refused at once, without sending anything, until ``wait_in_open_ms`` has passed."""
    HALF_OPEN = "half-open"
    """``wait_in_open_ms`` has passed: a fleet-wide bounded number of probes decide whether to close or reopen."""


class StoredState(str, Enum):
    """What the state key holds. Half-open is never stored: it is an open state whose reset time has come."""

    CLOSED = "closed"
    """Closed since ``at``; windows of this generation count."""
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


class WindowRecord(_Record):
    """One writer's share of an instance's sliding window in one generation.

    ``tallies`` are ``[at, calls, failed, slow]``: one per call (``calls`` = 1) in a count window, keeping only the
    writer's last ``size`` calls; one per epoch second in a time window, keeping the last ``size`` seconds.
    Every process merges all writers' tallies: the newest ``size`` calls, or the calls of the last ``size`` seconds.
    """

    generation: int = Field(ge=0)
    writer: str
    tallies: list[tuple[float, int, int, int]] = Field(default_factory=list)
    at: float


class ProbeRecord(_Record):
    """A claimed half-open probe slot and, once the probe is over, its outcome (``FAILED``/``SLOW`` bits)."""

    generation: int = Field(ge=0)
    writer: str
    claimed_at: float
    outcome: int | None = Field(default=None, ge=0, le=FAILED | SLOW)


def key_token(name: str) -> str:
    """``name`` as one KV key token (replica ids may hold dots from a host name)."""
    return _UNSAFE.sub("_", name) or "_"


def state_key(instance: str) -> str:
    return f"{instance}.{STATE}"


def window_key(instance: str, writer: str) -> str:
    return f"{instance}.{WINDOW}.{writer}"


def probe_key(instance: str, slot: int) -> str:
    return f"{instance}.{PROBE}.{slot}"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """``(instance, kind, rest)`` of a breaker key, or None for a key this layout does not know."""
    parts = key.split(".", 2)
    if len(parts) == 2 and parts[1] == STATE:
        return parts[0], STATE, ""
    if len(parts) == 3 and parts[1] in (WINDOW, PROBE):
        return parts[0], parts[1], parts[2]
    return None


__all__ = [
    "BreakerState",
    "ProbeRecord",
    "StateRecord",
    "StoredState",
    "WindowRecord",
    "key_token",
    "parse_key",
    "probe_key",
    "state_key",
    "window_key",
]
