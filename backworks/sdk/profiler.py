"""Profiles one plugin in-process under a generated workload: per hook, call counts, outcomes, latency
percentiles and memory allocated.

Two passes over the same workload: the first times every call (``perf_counter_ns``) with nothing else
running; the second, shorter, traces allocations with ``tracemalloc`` (which slows Python down, so its
timings are discarded). Calls run one at a time so that allocations belong to the call that made them.
The plugin runs through ``plugin.run`` as in the stage host, so hooks chained in one phase are measured
separately.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import random
import statistics
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from rich.table import Table

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import Phase
from backworks.pipeline.contract import verify
from backworks.pipeline.executor import dispatch
from backworks.pipeline.plugin import Analytics, Continue, Fail, Plugin, Respond, implements
from backworks.pipeline.secrets import redact
from backworks.pipeline.stores import MemoryRuntime, PluginRuntime
from backworks.sdk import factories

DEFAULT_REQUESTS = 1000
DEFAULT_ALLOCATION_SAMPLES = 200
REPORT_EVERY = 100
"""``generate_report`` is on-demand, not per request: the profile asks for a report every this many requests."""
PERCENTILES = (50, 90, 99)

PERCENTILE_RESOLUTION = 1000
"""``percentile`` resolves fractions to 1/1000 (p99.9 is the finest figure anyone reports)."""

Workload = Callable[[int], Envelope]
"""Builds the ``i``-th request envelope of a run."""


def cut_points(values: Sequence[float], n: int) -> list[float]:
    """The ``i/n`` quantile of ``values`` at index ``i``, for i = 0..n (stdlib ``statistics.quantiles``).

    Linear interpolation between order statistics (``method="inclusive"``, numpy's default): index 0 is the
    minimum, index ``n`` the maximum. All zeros for no values. The one percentile implementation of the project
    (the benchmark's figures use it too).
    """
    if len(values) < 2:
        return [float(values[0]) if values else 0.0] * (n + 1)
    inner = statistics.quantiles(values, n=n, method="inclusive")
    return [float(min(values)), *inner, float(max(values))]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (0.99 for p99), to 1/``PERCENTILE_RESOLUTION``; 0 for none."""
    return cut_points(values, PERCENTILE_RESOLUTION)[round(fraction * PERCENTILE_RESOLUTION)]


def generated_workload(seed: int = 0) -> Workload:
    """Varied requests: methods, paths, headers, query strings and JSON bodies of 0 to ~2 KiB."""
    rng = random.Random(seed)  # noqa: S311  # a reproducible workload, not security

    def build(index: int) -> Envelope:
        method = rng.choice(("GET", "GET", "GET", "POST", "PUT", "DELETE"))
        extra: dict[str, Any] = {}
        if method in ("POST", "PUT"):
            extra["json"] = {"id": index, "items": [rng.randrange(10_000) for _ in range(rng.randrange(0, 256))]}
        return factories.request(
            method,
            f"/items/{index % 97}",
            headers={"user-agent": "backworks-profile", "x-request-id": f"r{index}", "accept": "application/json"},
            query=[("page", str(index % 10))],
            path_params={"id": str(index % 97)},
            request_id=f"r{index}",
            **extra,
        )

    return build


@dataclass
class HookStats:
    """What one hook did during a run."""

    hook: str
    durations_ns: list[int] = field(default_factory=list)
    allocated: list[int] = field(default_factory=list)
    """Peak bytes allocated during each traced call."""
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return len(self.durations_ns)

    def percentile(self, percent: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.durations_ns, percent / 100) / 1e6

    def as_dict(self) -> dict[str, Any]:
        """The statistics as JSON data (milliseconds, bytes)."""
        return {
            "hook": self.hook,
            "calls": self.calls,
            "outcomes": dict(self.outcomes),
            **{f"p{p}_ms": round(self.percentile(p), 4) for p in PERCENTILES},
            "max_ms": round(max(self.durations_ns, default=0) / 1e6, 4),
            "mean_alloc_bytes": round(statistics.fmean(self.allocated)) if self.allocated else 0,
        }


@dataclass
class Profile:
    """The result of ``profile``: per-hook statistics and the run's parameters."""

    plugin: str
    version: str
    config: dict[str, Any]
    requests: int
    allocation_samples: int
    hooks: dict[str, HookStats]
    growth_bytes: int = 0
    """Memory still held after the traced requests were dropped (after a GC): a leak shows here."""

    def table(self) -> Table:
        """A rich table, one row per hook."""
        table = Table(
            title=f"profile of {self.plugin} {self.version}: {self.requests} requests "
            f"(allocations over {self.allocation_samples})",
            title_justify="left",
            caption=f"memory growth over the traced requests: {_size(self.growth_bytes)}",
            caption_justify="left",
        )
        for column in ("hook", "calls", "outcomes", *(f"p{p} ms" for p in PERCENTILES), "max ms", "alloc/call"):
            table.add_column(column, justify="left" if column in ("hook", "outcomes") else "right")
        for stats in self.hooks.values():
            row = stats.as_dict()
            outcomes = ", ".join(f"{name} {count}" for name, count in sorted(stats.outcomes.items()))
            table.add_row(
                stats.hook,
                str(stats.calls),
                outcomes,
                *(f"{row[f'p{p}_ms']:.3f}" for p in PERCENTILES),
                f"{row['max_ms']:.3f}",
                _size(row["mean_alloc_bytes"]),
            )
        return table

    def as_dict(self) -> dict[str, Any]:
        """The whole profile as JSON data (``backworks profile --format json``)."""
        return {
            "plugin": self.plugin,
            "version": self.version,
            "config": self.config,
            "requests": self.requests,
            "allocation_samples": self.allocation_samples,
            "hooks": [stats.as_dict() for stats in self.hooks.values()],
            "growth_bytes": self.growth_bytes,
        }


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if abs(count) >= 1024 else f"{count} B"


def _outcome(result: Any) -> str:
    if isinstance(result, Continue):
        return "continue"
    if isinstance(result, Respond):
        return "respond"
    if isinstance(result, Fail):
        return "fail"
    return "value"


class _Recorder:
    def __init__(self) -> None:
        self.hooks: dict[str, HookStats] = {}
        self.trace = False

    def wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        stats = self.hooks.setdefault(name, HookStats(name))

        @functools.wraps(method)
        async def measured(*args: Any) -> Any:
            if self.trace:
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
            started = time.perf_counter_ns()
            try:
                result = await method(*args)
            except Exception:
                if not self.trace:
                    stats.outcomes["raise"] += 1
                raise
            finally:
                elapsed = time.perf_counter_ns() - started
                if self.trace:
                    _, peak = tracemalloc.get_traced_memory()
                    stats.allocated.append(max(0, peak - before))
                else:
                    stats.durations_ns.append(elapsed)
            if not self.trace:
                stats.outcomes[_outcome(result)] += 1
            return result

        return measured


async def profile(
    plugin: type[Plugin[Any]],
    config: BaseModel | Mapping[str, Any] | None = None,
    *,
    requests: int = DEFAULT_REQUESTS,
    workload: Workload | None = None,
    allocation_samples: int = DEFAULT_ALLOCATION_SAMPLES,
    runtime: PluginRuntime | None = None,
) -> Profile:
    """Run ``requests`` generated requests through every phase ``plugin`` serves and measure each hook.

    A plugin using KV gets ``runtime`` (default: an in-process ``MemoryRuntime``, so hook times exclude broker
    round trips; pass a ``NatsRuntime`` to include them).
    """
    cls = verify(plugin, f"profiler ({plugin.__module__})")
    model = factories.config(cls, config)
    instance = cls(model, instance="profile")
    # KV round trips are not the plugin's CPU: an in-process store keeps them out of the hook times.
    instance.bind(runtime if runtime is not None else MemoryRuntime())
    build = workload or generated_workload()
    recorder = _Recorder()
    for spec in cls.HOOKS:
        if implements(instance, spec.name):
            setattr(instance, spec.name, recorder.wrap(spec.name, getattr(instance, spec.name)))
    await instance.startup()
    try:
        await _drive(instance, build, requests)
        samples = min(allocation_samples, requests)
        started_tracing = not tracemalloc.is_tracing()
        if started_tracing:
            tracemalloc.start()
        recorder.trace = True
        try:
            gc.collect()
            start, _ = tracemalloc.get_traced_memory()
            await _drive(instance, build, samples)
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - start
        finally:
            recorder.trace = False
            if started_tracing:
                tracemalloc.stop()
    finally:
        await instance.shutdown()
    return Profile(cls.name, cls.version, redact(model), requests, samples, recorder.hooks, growth)


async def _drive(instance: Plugin[Any], build: Workload, count: int) -> None:
    for index in range(count):
        request = build(index)
        for phase in instance.phases:
            answered = factories.response(200, json={"ok": True}, request=request)
            with contextlib.suppress(Exception):  # counted as a "raise" outcome by the recorder; the run goes on
                await dispatch(instance, phase, request if phase is Phase.REQUEST else answered)
        if (
            isinstance(instance, Analytics)
            and implements(instance, "generate_report")
            and (index + 1) % REPORT_EVERY == 0
        ):
            await instance.generate_report()
