"""Messages on the event stream (``BW_EVENTS``) and in the dead-letter stream (``BW_DLQ``)."""

from __future__ import annotations

import time
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backworks.contracts.envelope import Envelope
from backworks.contracts.types import FailureKind


class StageEvent(BaseModel):
    """Something that happened to one envelope at one stage (``bw.evt.stage.<kind>``)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    kind: FailureKind
    stage: str
    envelope_id: str
    request_id: str
    route: str
    message: str
    skipped: bool
    """True when the request went on without the stage."""
    at: float = Field(default_factory=time.time)


class SecurityDecision(str, Enum):
    """What a security stage decided about a request."""

    ALLOWED = "allowed"
    """The caller was authenticated or authorized: the request went on."""
    DENIED = "denied"
    """The request was refused (401, 403) and never reached the handler."""


class SecurityEvent(BaseModel):
    """Who did what, and what a security stage decided (``bw.evt.security.<decision>``): the audit trail."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    decision: SecurityDecision
    stage: str
    """Stage label, ``instance.phase``."""
    plugin: str
    """Plugin type (``api-key``, ``jwt``, ``authorize``…)."""
    consumer: str | None
    """The caller, when known (``None`` for a missing or unknown credential)."""
    status: int | None
    """The status answered when denied (401, 403)."""
    reason: str
    """Why, as the client was told (never a credential)."""
    route: str
    method: str
    path: str
    client: str | None
    envelope_id: str
    request_id: str
    at: float = Field(default_factory=time.time)


class DeadLetter(BaseModel):
    """An envelope that exhausted its deliveries at a stage (``bw.dlq.<instance>.<phase>``)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    stage: str
    subject: str
    """Subject the envelope was waiting on; ``backworks dlq replay`` publishes it there again."""
    attempts: int
    error: str
    dead_at: float = Field(default_factory=time.time)
    envelope: Envelope
    """The envelope as it died, its credentials (``Authorization``, ``Cookie``, declared names...) masked."""
    sealed: str | None = None
    """The request's headers and query (and the response's headers) as they were, credentials included, encrypted
    with the deployment's dead-letter key (Fernet): ``backworks dlq replay`` restores them. None when the request
    carried no credentials, or when they were not kept (``credentials_dropped``)."""
    credentials_dropped: bool = False
    """The request carried credentials but no dead-letter key was available: they were not kept at all."""
    answer_unknown: bool = False
    """Nothing could tell whether the request was answered: it died at its last stage, whose answer goes to the
    gateway without being stored. ``backworks dlq replay`` replays such a letter only with ``--force``."""
