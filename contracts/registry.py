"""Registry entry v1: what one running replica publishes about itself in the ``bw_registry`` bucket."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from backworks.contracts.names import Phase


class ReplicaInfo(BaseModel):
    """Heartbeat of one replica of one plugin instance (key ``<instance>.<replica>``)."""

    model_config = ConfigDict(extra="forbid")

    v: int = 1
    instance: str
    replica: str
    plugin: str
    version: str
    phases: list[Phase]
    pid: int
    host: str
    server: str = ""
    """``host:port`` of the NATS server this replica is connected to (empty: unknown or not connected)."""
    started_at: float
    sent_at: float
    health: str = "healthy"
    health_message: str = ""
    inflight: int = 0
    processed: int = 0
    failed: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    """Envelopes this replica ended without handing them on, per reason (a ``FailureKind`` value)."""
    events: dict[str, int] = Field(default_factory=dict)
    """What this replica's event publisher emitted, confirmed and lost (``EventPublisher.report``)."""
    metrics: dict[str, float] = Field(default_factory=dict)
