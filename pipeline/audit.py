"""Security decisions on the event stream: who called, which route, allowed or denied, and why.

A security plugin notes each decision on the envelope (``record_decision``) from ``authenticate`` or
``authorize``; right after the hook, the stage host publishes the decisions that stage noted as
``SecurityEvent`` on ``bw.evt.security.<decision>`` (``BW_EVENTS``), a core publish the stream captures,
with no extra round trip. Publishing at the stage host rather than from an ``audit_log`` hook keeps a security
plugin to one hop: an ``audit_log`` hook would add a response-phase stage per security plugin to every request.
The decisions also stay in ``envelope.annotations["security"]``, so later stages and the handler see them.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from backworks.contracts.envelope import Envelope
from backworks.contracts.events import SecurityDecision, SecurityEvent
from backworks.contracts.names import security_event_subject

if TYPE_CHECKING:
    from backworks.pipeline.events import EventPublisher

SECURITY_ANNOTATION = "security"
"""``envelope.annotations`` key of the decisions security stages noted (a list of ``SecurityEvent`` fields)."""


class AuditLevel(str, Enum):
    """Which decisions of a security plugin go on the event stream."""

    ALL = "all"
    """Every decision: who was allowed as well as who was refused."""
    DENIED = "denied"
    """Only refusals (401, 403)."""
    NONE = "none"
    """None."""

    def records(self, decision: SecurityDecision) -> bool:
        return self is AuditLevel.ALL or (self is AuditLevel.DENIED and decision is SecurityDecision.DENIED)


def record_decision(
    envelope: Envelope,
    plugin: str,
    decision: SecurityDecision,
    reason: str,
    *,
    level: AuditLevel = AuditLevel.ALL,
    status: int | None = None,
) -> None:
    """Note a decision of the current stage on ``envelope`` (published by the stage host after the hook)."""
    if not level.records(decision):
        return
    stage = envelope.current
    entry: dict[str, Any] = {
        "decision": decision.value,
        "stage": stage.label if stage is not None else "",
        "plugin": plugin,
        "consumer": envelope.principal.consumer if envelope.principal is not None else None,
        "status": status,
        "reason": reason,
    }
    envelope.annotations.setdefault(SECURITY_ANNOTATION, []).append(entry)


def noted(envelope: Envelope) -> int:
    """How many decisions ``envelope`` carries (the stage host counts before a hook, publishes the rest after)."""
    entries = envelope.annotations.get(SECURITY_ANNOTATION)
    return len(entries) if isinstance(entries, list) else 0


def events_since(envelope: Envelope, count: int) -> list[SecurityEvent]:
    """The decisions noted after the first ``count``, as events."""
    entries = envelope.annotations.get(SECURITY_ANNOTATION)
    if not isinstance(entries, list):
        return []
    return [
        SecurityEvent(
            **entry,
            route=envelope.route,
            method=envelope.method,
            path=envelope.path,
            client=envelope.client,
            envelope_id=envelope.id,
            request_id=envelope.request_id,
            trace_id=envelope.trace_id,
        )
        for entry in entries[count:]
    ]


def publish_decisions(events: EventPublisher, envelope: Envelope, count: int) -> None:
    """Publish the decisions noted on ``envelope`` after the first ``count`` (through the process's publisher)."""
    for event in events_since(envelope, count):
        events.emit(security_event_subject(event.decision.value), event)
