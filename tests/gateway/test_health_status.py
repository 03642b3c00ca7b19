"""A stage's health from its live replicas, breaker and replica health (``gateway/health._instance_status``)."""

from __future__ import annotations

from backworks.gateway.health import _instance_status
from backworks.pipeline.actions import HealthStatus


def test_a_critical_stage_whose_replicas_fail_over_is_degraded_not_unhealthy() -> None:
    assert _instance_status(True, 0, "closed", []) is HealthStatus.UNHEALTHY, "no replica: it cannot be served"
    assert _instance_status(True, 0, "closed", [], failing_over=True) is HealthStatus.DEGRADED, (
        "its replicas' node stopped answering: work waits for them, load balancers keep the gateway"
    )
    assert _instance_status(True, 0, "open", [], failing_over=True) is HealthStatus.UNHEALTHY, "breaker open"
    assert _instance_status(False, 0, "closed", []) is HealthStatus.DEGRADED
    assert _instance_status(True, 1, "closed", ["healthy"]) is HealthStatus.HEALTHY
