"""Messages on the event stream (``BW_EVENTS``) and in the dead-letter stream (``BW_DLQ``)."""

from __future__ import annotations

import itertools
import os
import time
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backworks.contracts.breakers import BreakerState
from backworks.contracts.envelope import Envelope
from backworks.contracts.types import FailureKind

_PROCESS_PREFIX = os.urandom(8).hex()
_SEQUENCE = itertools.count()


def new_event_id() -> str:
    """A fresh ``event_id``: unique per event, the key idempotent consumers deduplicate on.

    64 random bits drawn once per process, then a counter: unique across processes like a uuid4, without a
    system call per event (a uuid4 reads ``os.urandom`` each time, which is most of what an event costs)."""
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE):x}"


EVENT_ID_DESCRIPTION = "Unique per event: a consumer that sees it twice (a redelivery) stores it once."
TRACE_ID_DESCRIPTION = "W3C trace id (32 hex digits) of the request, when it has one."


class StageEvent(BaseModel):
    """Something that happened to one envelope at one stage (``bw.evt.stage.<kind>``)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description=TRACE_ID_DESCRIPTION)
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
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description=TRACE_ID_DESCRIPTION)
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


class RequestReceived(BaseModel):
    """The gateway accepted a request and sent it into the pipeline (``bw.evt.request.received``)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description=TRACE_ID_DESCRIPTION)
    request_id: str
    envelope_id: str
    route: str
    """The endpoint's name in the blueprint."""
    method: str
    path: str
    query: list[tuple[str, str]] = Field(default_factory=list)
    """Query parameters, credentials masked."""
    client: str | None = None
    body: str | None = None
    """The request body (UTF-8, credentials masked, cut at the body limit): only for endpoints with
    ``events: {bodies: true}``."""
    at: float = Field(default_factory=time.time)


class StageCompleted(BaseModel):
    """A stage ran its hook for a request (``bw.evt.stage.completed``); failures and skips are ``StageEvent``."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description=TRACE_ID_DESCRIPTION)
    request_id: str
    envelope_id: str
    route: str
    stage: str
    """Stage label, ``instance.phase``."""
    ms: float
    """How long the stage's hook took, in milliseconds."""
    at: float = Field(default_factory=time.time)


class StageDuration(BaseModel):
    """How long one stage's hook took for a request."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    """Stage label, ``instance.phase``."""
    ms: float


class RequestResponded(BaseModel):
    """The gateway answered a request (``bw.evt.request.responded``): one per request, whatever its fate."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description=TRACE_ID_DESCRIPTION)
    request_id: str
    envelope_id: str | None = None
    """None when the gateway answered before building an envelope (413, broker unavailable...)."""
    route: str
    method: str
    path: str
    status: int
    total_ms: float
    """From the request's arrival to its response, in milliseconds."""
    stages: list[StageDuration] = Field(default_factory=list)
    """Every stage that ran, with its duration, in order (also published one by one as ``StageCompleted`` unless
    ``events.stage_completed`` is off)."""
    degraded: list[str] = Field(default_factory=list)
    """Optional stages the request went on without (skipped: unavailable, failed, breaker open)."""
    failed_stage: str | None = None
    """The stage whose failure decided the answer, if one did."""
    consumer: str | None = None
    """The authenticated caller, when a security stage named one."""
    branches: dict[str, str] = Field(default_factory=dict)
    """The branch the request took at each canary split of its chain: split name -> instance."""
    body: str | None = None
    """The response body (UTF-8, cut at the body limit): only for endpoints with ``events: {bodies: true}``."""
    at: float = Field(default_factory=time.time)


class AlertState(str, Enum):
    """Where an alert rule stands."""

    FIRING = "firing"
    """The rule's condition holds."""
    RESOLVED = "resolved"
    """The condition held and no longer does."""


class AlertEvent(BaseModel):
    """An alert rule of the blueprint changed state (``bw.evt.alert.<state>``), per the analytics service."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description=TRACE_ID_DESCRIPTION)
    rule: str
    """The rule's name in the blueprint's ``alerts:``."""
    state: AlertState
    condition: str
    """The rule, in words (``error rate of notes above 5 % over 300 s``)."""
    value: float | None = None
    """What was measured (a rate in %, a latency in ms, a count), when the condition is a measure."""
    subject: str = ""
    """What it is about: an endpoint, an instance, the DLQ."""
    at: float = Field(default_factory=time.time)


class BreakerTransition(BaseModel):
    """A plugin instance's fleet-wide circuit breaker changed state (``bw.evt.breaker.<to>``).

    Published once per transition, fleet-wide: by the replica whose compare-and-set of the breaker's state record
    won (closed -> open, half-open -> closed or open), and for open -> half-open (derived from time, never
    written) by the replica that wrote the open record, when its clock reaches ``reset_at``."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: str = Field(default_factory=new_event_id, description=EVENT_ID_DESCRIPTION)
    trace_id: str | None = Field(default=None, description="Always None: a transition belongs to no one request.")
    instance: str
    """The plugin instance whose breaker it is."""
    from_state: BreakerState
    to_state: BreakerState
    generation: int
    """The breaker's generation after the transition (half-open keeps the open record's generation)."""
    reason: str = ""
    """Why (the rates that tripped it, the probes' verdict); empty for open -> half-open."""
    replica: str
    """The replica that published it (the writer of the transition)."""
    reset_at: float | None = None
    """When an open breaker turns half-open (epoch seconds); None unless ``to_state`` is open."""
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
