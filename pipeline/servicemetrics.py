"""Prometheus metrics of a service process (``--metrics-port``): stage replicas and event-stream subscribers.

Served by prometheus-client's own HTTP server (a daemon thread; ``GET /metrics`` or any path) on
``DEFAULT_METRICS_HOST`` unless told otherwise. Nothing is created unless a port is asked for: without
``--metrics-port`` the stage host's hot path pays one ``is None`` test per message.

Labels are bounded by the blueprint: ``stage`` is ``<instance>.<phase>``, ``instance`` a plugin instance, ``outcome``
and ``reason`` small fixed sets. Per-message figures (hook durations, outcomes, redeliveries) are recorded as
messages are settled; the rest (in flight, breaker states, drops, event losses) is read when Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from backworks.contracts.breakers import BreakerState
from backworks.pipeline.errors import MetricsPortUnavailable

if TYPE_CHECKING:
    from backworks.pipeline.events import EventPublisher
    from backworks.pipeline.executor import Outcome
    from backworks.pipeline.stagehost import StageHost

DEFAULT_METRICS_HOST = "127.0.0.1"
"""Loopback: metrics name the deployment's stages and instances; expose them wider with ``--metrics-host``."""
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BREAKER_VALUE = {BreakerState.CLOSED.value: 0, BreakerState.HALF_OPEN.value: 1, BreakerState.OPEN.value: 2}
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
"""A hook's outcomes: it succeeded (or answered), it failed and was skipped (optional stage), it failed the request."""


@dataclass(frozen=True)
class MetricsServer:
    """A running metrics endpoint."""

    host: str
    port: int
    stop: Callable[[], None]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def serve_metrics(registry: CollectorRegistry, port: int, host: str = DEFAULT_METRICS_HOST) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` (0: a free port) from a daemon thread."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): pick another --metrics-port, or 0"
        ) from None
    return MetricsServer(host, int(server.server_port), server.shutdown)


def events_families(events: EventPublisher) -> Iterator[Any]:
    """What a process's event publisher emitted, confirmed and lost (per reason)."""
    report = events.report()
    emitted = CounterMetricFamily("backworks_events", "Events emitted and confirmed.", labels=["outcome"])
    emitted.add_metric(["emitted"], report["emitted"])
    emitted.add_metric(["confirmed"], report["confirmed"])
    yield emitted
    lost = CounterMetricFamily("backworks_events_lost", "Events that did not reach BW_EVENTS.", labels=["reason"])
    for reason, count in dict(events.lost).items():
        lost.add_metric([reason], count)
    yield lost


class StageMetrics:
    """A stage replica's metrics: per stage hook durations, outcomes and redeliveries; read at scrape: in flight,
    breakers, drops, event losses."""

    def __init__(self, host: StageHost) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.hooks = Histogram(
            "backworks_stage_hook_duration_seconds", "Time of the plugin's hooks per message, per stage.", ["stage"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.messages = Counter(
            "backworks_stage_messages", "Messages whose hook ran, per stage and outcome.", ["stage", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.redeliveries = Counter(
            "backworks_stage_redeliveries", "Messages this replica got again (delivery > 1), per stage.", ["stage"],
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(StageCollector(host))
        self._bound: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def ran(self, outcome: Outcome) -> None:
        """Record one message whose hook ran (its timing is the envelope's last)."""
        envelope = outcome.envelope
        timing = envelope.timings[-1]
        skipped = outcome.failure is not None and envelope.errors and envelope.errors[-1].skipped
        kind = OK if outcome.failure is None else SKIPPED if skipped else FAILED
        key = (timing.stage, kind)
        bound = self._bound.get(key)
        if bound is None:  # label lookups once per (stage, outcome), not per message
            bound = self._bound[key] = (
                self.hooks.labels(timing.stage),
                self.messages.labels(timing.stage, kind),
                self.redeliveries.labels(timing.stage),
            )
        hooks, messages, redeliveries = bound
        hooks.observe(timing.ms / 1000)
        messages.inc()
        if timing.attempt > 1:
            redeliveries.inc()


class StageCollector(Collector):
    """Figures a stage host already keeps, read at scrape time (from the metrics server's thread: copies only)."""

    def __init__(self, host: StageHost) -> None:
        self.host = host

    def collect(self) -> Iterator[Any]:
        host = self.host
        yield GaugeMetricFamily(
            "backworks_stage_in_flight", "Messages this replica is working on.",
            value=sum(c.inflight for c in list(host.consumers)),
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "backworks_stage_dropped", "Envelopes this replica ended without a hand-off, per reason.", labels=["reason"]
        )
        for reason, count in dict(host.dropped).items():
            dropped.add_metric([reason], count)
        yield dropped
        breakers = GaugeMetricFamily("backworks_breaker_state", "0 closed, 1 half-open, 2 open.", labels=["instance"])
        with contextlib.suppress(RuntimeError):  # the breaker views changed during the copy: next scrape
            for name, seen in host.breakers.snapshot().items():
                breakers.add_metric([name], BREAKER_VALUE.get(str(seen.get("state")), 0))
        yield breakers
        yield from events_families(host.forwarder.events)


class SubscriberMetrics:
    """An event-stream subscriber's metrics (``audit serve``, ``analytics serve``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.events = Counter("backworks_tap_events", "Events stored (then acknowledged).", registry=self.registry)
        self.batches = Histogram(
            "backworks_tap_store_duration_seconds", "Time to store one fetched batch.",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.failures = Counter(
            "backworks_tap_failures", "Fetches or stores that failed (retried).", ["step"], registry=self.registry
        )
        self.pending = Gauge(
            "backworks_tap_pending", "Events on the stream this subscriber has not read yet.", registry=self.registry
        )
        self.publisher: EventPublisher | None = None
        """The process's event publisher (analytics' alerts), when it has one."""
        self.registry.register(PublisherCollector(self))


class PublisherCollector(Collector):
    def __init__(self, metrics: SubscriberMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        if self.metrics.publisher is not None:
            yield from events_families(self.metrics.publisher)
