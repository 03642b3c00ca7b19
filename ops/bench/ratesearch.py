"""The open-loop scenario: the highest arrival rate each system sustains with its p99 under a bound.

For each system the search starts at a share of the throughput it reached in this run's closed loop (at the
configured concurrency) and multiplies the rate by ``step`` while the system keeps up; if the first rate is
already too much, it divides instead until one is sustained. A rate is *sustained* when every request due in
the measured window was answered with a 2xx (none failed, none unfinished) and the p99, measured from each
request's due time (``ops.bench.openloop``), is within the bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_P99_BOUND_MS = 50.0
DEFAULT_START_SHARE = 0.5
"""First rate tried: this share of the system's closed-loop throughput in the same run."""
DEFAULT_STEP = 1.25
DEFAULT_MAX_STEPS = 8
DEFAULT_CONNECTIONS = 128
"""Connections of the open loop's pool: requests due while all are busy wait (and their wait is measured)."""
MIN_RATE = 1.0

Measure = Callable[[float], dict[str, Any]]
"""Runs the open loop at a rate (requests/s) and returns its figures (``ops.bench.openloop.run``)."""


def sustained(point: dict[str, Any], bound_ms: float) -> bool:
    """Whether the system kept up with ``point``'s rate with its p99 within ``bound_ms``."""
    answered = point["failed"] == 0 and point["unfinished"] == 0 and point["count"] > 0
    return bool(answered and point["p99"] <= bound_ms)


def search(
    measure: Measure,
    start: float,
    bound_ms: float,
    step: float = DEFAULT_STEP,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> dict[str, Any]:
    """Find the highest sustained rate among ``start * step**k`` (up, or down when ``start`` is not sustained)."""
    rate = max(MIN_RATE, round(start))
    points = [measure(rate)]
    best: float | None = None
    going_up = sustained(points[0], bound_ms)
    if going_up:
        best = rate
    for _ in range(max(0, max_steps - 1)):
        rate = max(MIN_RATE, round(rate * step if going_up else rate / step))
        point = measure(rate)
        points.append(point)
        if sustained(point, bound_ms):
            best = max(best or 0.0, rate)
            if not going_up:
                break
        elif going_up:
            break
        if rate <= MIN_RATE and not going_up:
            break
    return {"bound_ms": bound_ms, "sustained_rps": best, "points": points}


HEADERS = ["system", "sustained req/s", "vs floor", "rates tried (req/s: p99 ms)"]


def rows(results: dict[str, Any]) -> list[list[str]]:
    """Table rows of a run's ``open_loop`` figures (none when the scenario was not run)."""
    found = results.get("open_loop") or {}
    floor = (found.get("floor") or {}).get("sustained_rps")
    table = []
    for system, figures in found.items():
        best = figures["sustained_rps"]
        versus = f"{best / floor:.2f}x" if best and floor else "n/a"
        tried = ", ".join(
            f"{p['rate']:.0f}: {p['p99']:.1f}" + ("" if sustained(p, figures["bound_ms"]) else " ✗")
            for p in figures["points"]
        )
        table.append([system, "none" if best is None else f"{best:.0f}", versus, tried])
    return table


def title(results: dict[str, Any]) -> str:
    found = results.get("open_loop") or {}
    bound = next(iter(found.values()))["bound_ms"] if found else DEFAULT_P99_BOUND_MS
    return (
        f"Open loop: highest fixed arrival rate sustained with p99 <= {bound:g} ms "
        "(latency from each request's due time; ✗ = not sustained)"
    )
