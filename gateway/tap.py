"""What the gateway puts on the event stream about each request: received, each stage completed, responded.

Events are built from what the gateway already holds (the envelope it sent, the one that came back with the
stages' timings), so stages publish nothing extra on the success path: one process emits a request's flow
events, through its one ``EventPublisher``, off the request path. Bodies are copied only for endpoints that opt
in (``events: {bodies: true}``), cut at ``events.body_bytes``; query parameters and bodies are always masked of
the request's credentials.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from backworks.contracts.envelope import Envelope
from backworks.contracts.events import new_event_id
from backworks.contracts.names import REQUEST_RECEIVED_SUBJECT, REQUEST_RESPONDED_SUBJECT, STAGE_COMPLETED_SUBJECT
from backworks.pipeline import credentials
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.secrets import MASK

EVENTS_SWITCH = "BACKWORKS_EVENTS"
"""Environment variable: ``off`` (or ``0``, ``false``) turns the per-request events off, whatever the blueprint."""
OFF_VALUES = frozenset({"off", "0", "false", "no"})
TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
INVALID_TRACE_ID = "0" * 32
INVALID_SPAN_ID = "0" * 16
UNSUPPORTED_VERSION = "ff"
SAMPLED = "01"


def events_switched_off() -> bool:
    return os.environ.get(EVENTS_SWITCH, "").strip().lower() in OFF_VALUES


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when absent or malformed."""
    found = TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if found is None or found.group(1) == UNSUPPORTED_VERSION:
        return None
    if found.group(2) == INVALID_TRACE_ID or found.group(3) == INVALID_SPAN_ID:
        return None
    return found.group(2)


@dataclass(frozen=True)
class TraceContext:
    """The request's W3C trace context at the gateway: the client's trace continued, or a new one."""

    trace_id: str
    span_id: str
    """The gateway's own span (the parent of the stages' work)."""
    flags: str

    @classmethod
    def of(cls, traceparent: str | None, new_trace: str | None = None, span: str | None = None) -> TraceContext:
        """The client's trace continued under a new span, or a new trace. ``new_trace``/``span``: random hex ids
        already drawn for this request (``gateway.ids``), used instead of reading ``os.urandom`` again."""
        span = span or os.urandom(8).hex()
        trace_id = trace_id_of(traceparent)
        if trace_id is None or traceparent is None:
            return cls(new_trace or os.urandom(16).hex(), span, SAMPLED)
        return cls(trace_id, span, traceparent.strip()[-2:].lower())

    @property
    def traceparent(self) -> str:
        """``traceparent`` for the stages (NATS headers) and ``traceresponse`` for the client (Trace Context L2)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass
class Served:
    """What one request became, filled in as it goes: the envelope sent and the one that came back."""

    sent: Envelope | None = None
    reply: Envelope | None = None
    branches: dict[str, str] = field(default_factory=dict)
    """The branch taken at each canary split (``Envelope.branches``), known once the itinerary is chosen."""


@dataclass(frozen=True)
class RequestTap:
    """Emits one endpoint's request events.

    The events are dicts shaped exactly like their contracts (``RequestReceived``, ``StageCompleted``,
    ``RequestResponded``; a test validates them against the models): on the gateway's hot path, building and
    validating pydantic models cost more than the publishing itself.
    """

    events: EventPublisher
    bodies: bool
    body_bytes: int
    stage_completed: bool

    def received(self, envelope: Envelope) -> None:
        self.events.emit(
            REQUEST_RECEIVED_SUBJECT,
            {
                "v": 1,
                "event_id": new_event_id(),
                "trace_id": envelope.trace_id,
                "request_id": envelope.request_id,
                "envelope_id": envelope.id,
                "route": envelope.route,
                "method": envelope.method,
                "path": envelope.path,
                "query": credentials.redact_query(envelope.query),
                "client": envelope.client,
                "body": self._body(envelope.body, envelope) if self.bodies else None,
                "at": time.time(),
            },
        )

    def responded(
        self, served: Served, *, route: str, method: str, path: str, request_id: str, status: int, total_ms: float
    ) -> None:
        """The request's stage completions (from the reply's timings) and its response."""
        sent, reply = served.sent, served.reply
        envelope = reply or sent
        trace_id = envelope.trace_id if envelope is not None else None
        now = time.time()
        stages = [{"stage": t.stage, "ms": t.ms} for t in reply.timings] if reply is not None else []
        if reply is not None and self.stage_completed:
            for stage in stages:
                self.events.emit(
                    STAGE_COMPLETED_SUBJECT,
                    {"v": 1, "event_id": new_event_id(), "trace_id": trace_id, "request_id": request_id,
                     "envelope_id": reply.id, "route": route, **stage, "at": now},
                )  # fmt: skip
        errors = reply.errors if reply is not None else []
        body = None
        if self.bodies and reply is not None and reply.response is not None:
            body = self._body(reply.response.body, reply)
        self.events.emit(
            REQUEST_RESPONDED_SUBJECT,
            {
                "v": 1,
                "event_id": new_event_id(),
                "trace_id": trace_id,
                "request_id": request_id,
                "envelope_id": envelope.id if envelope is not None else None,
                "route": route,
                "method": method,
                "path": path,
                "status": status,
                "total_ms": round(total_ms, 3),
                "stages": stages,
                "degraded": [e.stage for e in errors if e.skipped],
                "failed_stage": next((e.stage for e in errors if not e.skipped), None),
                "consumer": reply.principal.consumer if reply is not None and reply.principal is not None else None,
                "branches": served.branches,
                "body": body,
                "at": now,
            },
        )

    def _body(self, body: bytes, envelope: Envelope) -> str:
        text = body.decode("utf-8", errors="replace")
        for secret in credentials.values(envelope):  # before cutting: no credential survives half-masked
            text = text.replace(secret, MASK)
        return text[: self.body_bytes]
