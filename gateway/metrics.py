"""Prometheus metrics of the gateway at ``/_backworks/metrics`` (prometheus-client, one registry per app).

Labels are bounded by the blueprint: ``route`` is an endpoint name, ``stage`` a stage label, ``instance`` a
plugin instance, ``status`` a class (``2xx``...), ``reason`` a loss reason: never a path, a client or a
consumer id. Request counts and latencies are recorded as requests end; everything else (breakers, live
replicas, each stage's pending and unacknowledged messages and redeliveries, dead letters, event losses) is
read when Prometheus scrapes (backlog and dead letters from the gateway's background poll,
``gateway.backpressure``), so the request path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from backworks.contracts.breakers import BreakerState
from backworks.contracts.envelope import Timing
from backworks.gateway.requestfigures import RequestFigures
from backworks.gateway.state import GatewayState

METRICS_PATH = "/_backworks/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BREAKER_VALUE = {BreakerState.CLOSED.value: 0, BreakerState.HALF_OPEN.value: 1, BreakerState.OPEN.value: 2}


class GatewayMetrics:
    """What the gateway counts per request, and what it reads at scrape time."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.figures = RequestFigures(LATENCY_BUCKETS_S)
        """Request counts and latencies (``backworks_requests``, ``..._duration_seconds``): plain dicts per request."""
        self.registry.register(self.figures)
        self.inflight = Gauge("backworks_requests_in_flight", "Requests being served.", registry=self.registry)
        self.scraped = ScrapeCollector(state)
        self.registry.register(self.scraped)

    def observe(self, route: str, status: int, seconds: float, timings: list[Timing]) -> None:
        self.figures.observe(route, status, seconds, timings)

    async def render(self) -> bytes:
        return generate_latest(self.registry)


class ScrapeCollector(Collector):
    """Figures read when Prometheus scrapes: breakers, replicas, and the last backpressure poll (stage backlog,
    dead letters), events."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state
        breakers = GaugeMetricFamily("backworks_breaker_state", "0 closed, 1 half-open, 2 open.", labels=["instance"])
        live = GaugeMetricFamily("backworks_live_replicas", "Replicas heartbeating.", labels=["instance"])
        snapshot = state.breakers.snapshot() if state.breakers else {}
        for name in state.blueprint.instances:
            breaker = snapshot.get(name, {}).get("state", BreakerState.CLOSED.value)
            breakers.add_metric([name], BREAKER_VALUE.get(str(breaker), 0))
            live.add_metric([name], state.liveness.count(name) if state.liveness else 0)
        yield breakers
        yield live
        yield from self.backpressure()
        dropped = CounterMetricFamily(
            "backworks_gateway_failures", "Requests the gateway failed itself.", labels=["cause"]
        )
        for cause, count in state.dropped.items():
            dropped.add_metric([cause], count)
        yield dropped
        if state.forwarder is not None:
            report = state.forwarder.events.report()
            events = CounterMetricFamily(
                "backworks_events", "Events this gateway emitted and confirmed.", labels=["outcome"]
            )
            events.add_metric(["emitted"], report["emitted"])
            events.add_metric(["confirmed"], report["confirmed"])
            yield events
            lost = CounterMetricFamily(
                "backworks_events_lost", "Events that did not reach BW_EVENTS.", labels=["reason"]
            )
            for reason, count in state.forwarder.events.lost.items():
                lost.add_metric([reason], count)
            yield lost

    def backpressure(self) -> Iterator[Any]:
        watch = self.state.backpressure
        if watch is None:
            return
        pending = GaugeMetricFamily("backworks_stage_pending", "Messages waiting for a stage.", labels=["stage"])
        acking = GaugeMetricFamily(
            "backworks_stage_ack_pending", "Messages a stage took and has not acknowledged.", labels=["stage"]
        )
        redelivered = GaugeMetricFamily(
            "backworks_stage_redelivered",
            "Unacknowledged messages of a stage delivered more than once.",
            labels=["stage"],
        )
        oldest = GaugeMetricFamily(
            "backworks_stage_oldest_pending_seconds",
            "Age of the oldest message a stage has not acknowledged (0: nothing waits).",
            labels=["stage"],
        )
        for label, load in watch.loads.items():
            pending.add_metric([label], load.pending)
            acking.add_metric([label], load.ack_pending)
            redelivered.add_metric([label], load.redelivered)
            oldest.add_metric([label], load.oldest_pending_age_s or 0.0)
        yield pending
        yield acking
        yield redelivered
        yield oldest
        if watch.dead_letters is not None:
            yield GaugeMetricFamily("backworks_dead_letters", "Envelopes in BW_DLQ.", value=watch.dead_letters)
