"""Latency and throughput figures from raw samples (percentiles: ``backworks.sdk.profiler.cut_points``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from backworks.sdk.profiler import cut_points

CDF_POINTS = 200
"""Quantiles kept per measurement in the JSON (and drawn in the chart)."""


@dataclass(frozen=True)
class Summary:
    """One system under one load: latencies in milliseconds, throughput in requests per second."""

    count: int
    seconds: float
    throughput: float
    p50: float
    p95: float
    p99: float
    p999: float
    mean: float
    max: float
    failed: int
    """Responses that were not 2xx, plus connection errors."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_ns: Sequence[int], seconds: float, failed: int = 0) -> Summary:
    to_ms = 1e-6
    count = len(latencies_ns)
    per_mille = cut_points(latencies_ns, 1000)  # p99.9 is index 999
    return Summary(
        count=count,
        seconds=round(seconds, 4),
        throughput=round(count / seconds, 1) if seconds > 0 else 0.0,
        p50=round(per_mille[500] * to_ms, 4),
        p95=round(per_mille[950] * to_ms, 4),
        p99=round(per_mille[990] * to_ms, 4),
        p999=round(per_mille[999] * to_ms, 4),
        mean=round(sum(latencies_ns) / count * to_ms, 4) if count else 0.0,
        max=round(per_mille[-1] * to_ms, 4) if count else 0.0,
        failed=failed,
    )


def cdf(latencies_ns: Sequence[int], points: int = CDF_POINTS) -> list[float]:
    """Latency in ms at ``points`` evenly spaced quantiles from 0 to 1 (for the JSON and the chart)."""
    if not latencies_ns:
        return []
    return [round(value * 1e-6, 4) for value in cut_points(latencies_ns, points - 1)]


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


@dataclass
class Measurement:
    """One load on one system in one round, with the CPU each process spent meanwhile."""

    round: int
    system: str
    kind: str
    connections: int
    latencies_ns: list[int]
    seconds: float
    failed: int
    statuses: dict[str, int]
    errors: list[str]
    cpu_seconds: dict[str, float]
    completed: int
    """Responses during the whole job (warm-up and drain included), which the CPU time was spent on."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "system": self.system,
            "kind": self.kind,
            "connections": self.connections,
            **summarize(self.latencies_ns, self.seconds, self.failed).as_dict(),
            "statuses": self.statuses,
            "errors": self.errors,
            "completed": self.completed,
            "cpu_seconds": {k: round(v, 4) for k, v in self.cpu_seconds.items()},
            "cdf_ms": cdf(self.latencies_ns),
        }
