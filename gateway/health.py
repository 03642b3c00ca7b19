"""The gateway's health report: broker connectivity, live replicas, plugin health and breaker state per stage,
and what the HTTP edge and the reply inbox refused."""

from __future__ import annotations

from typing import Any

from backworks.contracts.breakers import BreakerState
from backworks.gateway.state import GatewayState
from backworks.pipeline import broker
from backworks.pipeline.actions import HealthStatus

HEALTH_PATH = "/_backworks/health"
SEVERITY = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}


def _worst(*statuses: HealthStatus) -> HealthStatus:
    return max(statuses, key=SEVERITY.__getitem__)


def _instance_status(
    critical: bool, live: int, breaker: str, replica_health: list[str], failing_over: bool = False
) -> HealthStatus:
    """unhealthy: a critical stage cannot be served; degraded: an optional one cannot, a replica is unwell, or the
    stage's replicas are failing over from a node that stopped answering (``failing_over``: work waits for them)."""
    cannot_serve = (live == 0 and not failing_over) or breaker == BreakerState.OPEN
    if cannot_serve:
        return HealthStatus.UNHEALTHY if critical else HealthStatus.DEGRADED
    if live == 0:
        return HealthStatus.DEGRADED
    if breaker == BreakerState.HALF_OPEN or any(h != HealthStatus.HEALTHY for h in replica_health):
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


def health_report(state: GatewayState) -> tuple[dict[str, Any], int]:
    """Broker connectivity, live replicas, plugin health and breaker state per stage, for load balancers."""
    connected = bool(state.client and state.client.is_connected)
    status = HealthStatus.HEALTHY if connected else HealthStatus.UNHEALTHY
    breakers = state.breakers.snapshot() if state.breakers else {}
    stages: dict[str, Any] = {}
    dropped: dict[str, int] = dict(state.dropped)
    events_lost = 0
    for name, instance in state.blueprint.instances.items():
        live = state.liveness.live(name) if state.liveness else []
        for replica in live:
            for reason, count in replica.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + count
            events_lost += replica.events.get("lost", 0)
        breaker = breakers.get(name, {"state": BreakerState.CLOSED.value})
        failing_over = not live and state.liveness is not None and state.liveness.stranded(name)
        instance_status = _instance_status(
            instance.critical, len(live), str(breaker.get("state")), [r.health for r in live], failing_over
        )
        status = _worst(status, instance_status)
        for phase in instance.cls.phases:
            stages[f"{name}.{phase.value}"] = {
                "instance": name,
                "plugin": instance.cls.name,
                "phase": phase.value,
                "critical": instance.critical,
                "colocate": instance.spec.colocate,
                "status": instance_status.value,
                "live_replicas": len(live),
                "failing_over": failing_over,
                "breaker": breaker,
                "backpressure": state.backpressure.report(f"{name}.{phase.value}") if state.backpressure else None,
                "replicas": [
                    {
                        "replica": r.replica,
                        "plugin": r.plugin,
                        "version": r.version,
                        "pid": r.pid,
                        "host": r.host,
                        "health": r.health,
                        "message": r.health_message,
                        "inflight": r.inflight,
                        "processed": r.processed,
                        "failed": r.failed,
                        "dropped": r.dropped,
                        "events": r.events,
                        "metrics": r.metrics,
                    }
                    for r in live
                ],
            }
    body = {
        "status": status.value,
        "gateway": state.gateway_id,
        "blueprint": state.blueprint.model.name,
        "nats": broker.describe(state.client) if state.client else {"connected": False, "url": None},
        "stages": stages,
        "groups": state.blueprint.model.groups(),
        "dropped": dropped,
        "events": {
            "gateway": state.forwarder.events.report() if state.forwarder else None,
            "lost_by_replicas": events_lost,
        },
        "edge": state.edge.report(),
        "inbox": state.inbox.report() if state.inbox else None,
        "recording": state.recorder.report() if state.recorder else None,
    }
    return body, 503 if status is HealthStatus.UNHEALTHY else 200
