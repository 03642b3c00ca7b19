"""What plugin hooks return and report: actions (``Continue``, ``Respond``, ``Fail``), health and alerts.

Re-exported by ``backworks.pipeline.plugin``, the contract plugin authors import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from backworks.contracts.envelope import Envelope, HttpResponse


class HealthStatus(str, Enum):
    """Health of one plugin replica."""

    HEALTHY = "healthy"
    """Working normally."""
    DEGRADED = "degraded"
    """Working, with reduced quality."""
    UNHEALTHY = "unhealthy"
    """Not able to do its work."""


@dataclass(frozen=True)
class Health:
    """What ``health_check`` returns: a status and a human-readable message."""

    status: HealthStatus = HealthStatus.HEALTHY
    message: str = ""


class AlertSeverity(str, Enum):
    """How urgent an alert is."""

    INFO = "info"
    """Worth knowing."""
    WARNING = "warning"
    """Needs attention soon."""
    CRITICAL = "critical"
    """Needs attention now."""


@dataclass(frozen=True)
class Alert:
    """Raised by a monitoring plugin's ``generate_alerts``: logged and attached to the envelope."""

    name: str
    message: str
    severity: AlertSeverity = AlertSeverity.WARNING
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Continue:
    """Go on with this envelope."""

    envelope: Envelope


@dataclass(frozen=True)
class Respond:
    """Answer the client now; the remaining request stages are skipped."""

    response: HttpResponse


@dataclass(frozen=True)
class Fail:
    """This stage failed; the reason goes to the log (and to the client only with ``gateway.expose_errors``)."""

    reason: str


Action = Continue | Respond | Fail
