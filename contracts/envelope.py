"""Envelope v1: one HTTP request and the response being built for it, as it travels the pipeline.

The gateway builds it, every stage reads it, changes what it owns and hands it on, and the last stage
publishes it back to the gateway's reply subject. Bytes (the bodies) are written as URL-safe base64
(RFC 4648 §5) in JSON; standard base64 is accepted on input.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backworks.contracts.names import Phase
from backworks.contracts.types import FailureKind, Headers, QueryParams

ENVELOPE_VERSION: Literal[1] = 1

_MODEL_CONFIG = ConfigDict(
    extra="forbid",
    ser_json_bytes="base64",
    val_json_bytes="base64",
)


class Stage(BaseModel):
    """One step of an itinerary: a plugin instance in a phase."""

    model_config = _MODEL_CONFIG

    instance: str
    phase: Phase
    critical: bool = False
    """A critical stage that fails ends the request; a non-critical one is skipped and noted."""
    timeout_ms: int = 100
    """The plugin's ``max_execution_time``, so forwarders know what to expect."""
    colocate: str | None = None
    """The instance's co-location group: consecutive stages of one group are run by one process, handed on in
    memory, so a forwarder handing work to the first of them expects it held for all of their time limits."""

    @property
    def label(self) -> str:
        return f"{self.instance}.{self.phase.value}"


class HttpResponse(BaseModel):
    """The response being built; set by the handler or by a stage that answers early."""

    model_config = _MODEL_CONFIG

    status: int = 200
    headers: Headers = Field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def set_header(self, name: str, value: str) -> None:
        name = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.headers.append((name, value))


class Principal(BaseModel):
    """Who the request acts for, once a security stage has authenticated it."""

    model_config = _MODEL_CONFIG

    consumer: str
    """The caller's name as the authenticating plugin knows it (an API key's consumer, a JWT's ``sub``)."""
    kind: str = "user"
    scopes: list[str] = Field(default_factory=list)
    """What the caller may do (``notes:write``); ``authorize`` checks them."""
    claims: dict[str, Any] = Field(default_factory=dict)


class Timing(BaseModel):
    """How long one stage spent on the envelope."""

    model_config = _MODEL_CONFIG

    stage: str
    """Stage label, ``instance.phase``."""
    ms: float
    replica: str = ""
    attempt: int = 1


class StageError(BaseModel):
    """A failure recorded by a stage (skipped or fatal)."""

    model_config = _MODEL_CONFIG

    stage: str
    kind: FailureKind
    message: str
    skipped: bool
    """True when the stage was non-critical and the request went on without it."""


class Envelope(BaseModel):
    """Envelope v1. See the module docstring."""

    model_config = _MODEL_CONFIG

    v: Literal[1] = ENVELOPE_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    correlation_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    request_id: str = ""
    trace_id: str | None = None
    """W3C trace id (32 hex digits) of the request: the client's ``traceparent``'s, or one the gateway made. In the
    request's events and log lines."""
    traceparent: str | None = None
    """The gateway's W3C ``traceparent`` (its span as parent), also sent as a NATS header with each hand-off."""
    deadline: float = 0.0
    """Unix time (seconds) after which nobody waits for this envelope any more."""
    reply_to: str = ""
    """Core-NATS subject the finished envelope goes to."""

    revision: int | None = None
    """The blueprint revision (``bw_config``) the gateway routed the request under; every stage runs it with that
    revision's config. Absent (older senders): the revision the receiving service started with."""

    route: str
    """Endpoint name in the blueprint."""
    method: str
    path: str
    path_params: dict[str, str] = Field(default_factory=dict)
    query: QueryParams = Field(default_factory=list)
    headers: Headers = Field(default_factory=list)
    body: bytes = b""
    client: str | None = None

    itinerary: list[Stage] = Field(default_factory=list)
    cursor: int = 0
    """Index into ``itinerary`` of the stage that should handle the envelope next."""
    branches: dict[str, str] = Field(default_factory=dict)
    """The branch this request took at each canary split of its chain: split name -> instance (``contracts.splits``)."""

    annotations: dict[str, Any] = Field(default_factory=dict)
    principal: Principal | None = None
    response: HttpResponse | None = None
    timings: list[Timing] = Field(default_factory=list)
    errors: list[StageError] = Field(default_factory=list)

    @property
    def current(self) -> Stage | None:
        return self.itinerary[self.cursor] if self.cursor < len(self.itinerary) else None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def set_header(self, name: str, value: str) -> None:
        name = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.headers.append((name, value))

    def query_param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def remaining(self) -> float:
        """Seconds left before the deadline (negative when past it)."""
        return self.deadline - time.time()

    def fail_stage(self, kind: FailureKind, message: str, *, skip: bool | None = None) -> StageError:
        """Record that the current stage failed, and move the cursor on; returns the error recorded.

        An optional stage is skipped (noted in ``annotations["skipped"]``) and the request goes on at the next
        stage; a critical one, or any when ``skip=False``, ends the itinerary: the gateway answers with the error.
        """
        stage = self.current
        label = stage.label if stage is not None else "unknown"
        if skip is None:
            skip = stage is not None and not stage.critical
        error = StageError(stage=label, kind=kind, message=message, skipped=skip)
        self.errors.append(error)
        if skip:
            self.annotations.setdefault("skipped", []).append({"stage": label, "reason": kind.value})
            self.cursor += 1
        else:
            self.cursor = len(self.itinerary)
        return error

    def first_response_stage(self) -> int:
        """Index of the first response-phase stage, or the end of the itinerary."""
        for index, stage in enumerate(self.itinerary):
            if stage.phase is Phase.RESPONSE:
                return index
        return len(self.itinerary)

    def to_json(self) -> bytes:
        """The envelope as JSON bytes, what crosses the broker.

        Straight from pydantic-core's serializer: ``model_dump_json().encode()`` would decode its bytes to
        ``str`` and encode them again, two copies of the envelope on every hop.
        """
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        """Parse and validate JSON bytes (``ValidationError`` when invalid), as ``model_validate_json`` does."""
        envelope: Envelope = cls.__pydantic_validator__.validate_json(data)
        return envelope
