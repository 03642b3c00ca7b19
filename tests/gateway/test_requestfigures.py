"""The gateway's request figures: the same Prometheus exposition prometheus-client's Counter and Histogram write."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from backworks.contracts.envelope import Timing
from backworks.gateway.metrics import LATENCY_BUCKETS_S
from backworks.gateway.requestfigures import (
    LATENCY_HELP,
    LATENCY_NAME,
    REQUESTS_HELP,
    REQUESTS_NAME,
    STAGE_HELP,
    STAGE_NAME,
    RequestFigures,
)

REQUESTS = [  # (route, status, seconds, stage timings in ms), bucket edges and values beyond the last one included
    ("hello", 200, 0.0005, [("a.request", 0.2), ("b.response", 1.0)]),
    ("hello", 200, 0.001, [("a.request", 2.5), ("b.response", 100.0)]),
    ("hello", 404, 0.0025, []),
    ("notes", 503, 45.0, [("a.request", 30_000.0)]),
    ("notes", 201, 30.0, [("c.request", 5.0)]),
]


def reference_and_ours() -> tuple[CollectorRegistry, Counter, Histogram, Histogram, CollectorRegistry, RequestFigures]:
    reference = CollectorRegistry(auto_describe=False)
    requests = Counter(REQUESTS_NAME, REQUESTS_HELP, ["route", "status"], registry=reference)
    latency = Histogram(LATENCY_NAME, LATENCY_HELP, ["route"], buckets=LATENCY_BUCKETS_S, registry=reference)
    stages = Histogram(STAGE_NAME, STAGE_HELP, ["stage"], buckets=LATENCY_BUCKETS_S, registry=reference)
    ours = CollectorRegistry(auto_describe=False)
    figures = RequestFigures(LATENCY_BUCKETS_S)
    ours.register(figures)
    return reference, requests, latency, stages, ours, figures


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text format, without prometheus-client's ``_created`` samples (which ``RequestFigures`` leaves out)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_exposition_equals_prometheus_clients_own_objects() -> None:
    reference, requests, latency, stages, ours, figures = reference_and_ours()
    for route, status, seconds, timings in REQUESTS:
        requests.labels(route, f"{status // 100}xx").inc()
        latency.labels(route).observe(seconds)
        for stage, ms in timings:
            stages.labels(stage).observe(ms / 1000)
        figures.observe(route, status, seconds, [Timing(stage=stage, ms=ms) for stage, ms in timings])
    assert exposition(ours) == exposition(reference)
    assert any(line.startswith("backworks_stage_duration_seconds_bucket") for line in exposition(ours))


def test_nothing_observed_exposes_the_same_empty_families() -> None:
    reference, _, _, _, ours, _ = reference_and_ours()
    assert exposition(ours) == exposition(reference)
    assert not any("_bucket" in line for line in exposition(ours))
