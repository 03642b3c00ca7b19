"""Prometheus metrics of the gateway at ``/_backworks/metrics`` (prometheus-client, one registry per app).

Labels are bounded by the blueprint: ``route`` is an endpoint name, ``stage`` a stage label, ``instance`` a
plugin instance, ``status`` a class (``2xx``...), ``reason`` a loss reason: never a path, a client or a
consumer id. Request counts and latencies are recorded as requests end; everything else (breakers, live
replicas, each stage's pending and unacknowledged messages and redeliveries, dead letters, event losses) is
read when Prometheus scrapes, so the request path pays nothing for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from backworks.contracts.breakers import BreakerState
from backworks.contracts.envelope import Timing
from backworks.contracts.names import DLQ_STREAM, PIPELINE_STREAM, stage_durable
from backworks.gateway.requestfigures import RequestFigures
from backworks.gateway.state import GatewayState

METRICS_PATH = "/_backworks/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROBE_TIMEOUT_S = 1.0
"""Seconds a scrape waits for JetStream's consumer and stream figures."""
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
        await self.scraped.refresh()
        return generate_latest(self.registry)


class ScrapeCollector(Collector):
    """Figures read when Prometheus scrapes: breakers, replicas, JetStream backpressure, dead letters, events."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.consumers: dict[str, tuple[int, int, int]] = {}
        self.dead_letters: int | None = None

    async def refresh(self) -> None:
        js = self.state.js
        if js is None:
            return
        stages = {
            f"{name}.{phase.value}": stage_durable(name, phase)
            for name, item in self.state.blueprint.instances.items()
            for phase in item.cls.phases
        }

        async def consumer(durable: str) -> tuple[int, int, int]:
            info = await js.consumer_info(PIPELINE_STREAM, durable, timeout=PROBE_TIMEOUT_S)
            return int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_redelivered or 0)

        found = await asyncio.gather(*(consumer(d) for d in stages.values()), return_exceptions=True)
        self.consumers = {label: value for label, value in zip(stages, found, strict=True) if isinstance(value, tuple)}
        try:
            info = await asyncio.wait_for(js.stream_info(DLQ_STREAM), PROBE_TIMEOUT_S)
            self.dead_letters = int(info.state.messages)
        except Exception:
            self.dead_letters = None

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
        pending = GaugeMetricFamily("backworks_stage_pending", "Messages waiting for a stage.", labels=["stage"])
        acking = GaugeMetricFamily(
            "backworks_stage_ack_pending", "Messages a stage took and has not acknowledged.", labels=["stage"]
        )
        redelivered = GaugeMetricFamily(
            "backworks_stage_redelivered", "Messages of a stage delivered more than once.", labels=["stage"]
        )
        for label, (waiting, unacked, again) in self.consumers.items():
            pending.add_metric([label], waiting)
            acking.add_metric([label], unacked)
            redelivered.add_metric([label], again)
        yield pending
        yield acking
        yield redelivered
        if self.dead_letters is not None:
            yield GaugeMetricFamily("backworks_dead_letters", "Envelopes in BW_DLQ.", value=self.dead_letters)
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
