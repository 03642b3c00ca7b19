"""What a run produces: ``results.json`` (raw figures and environment), a rich table (``table.txt``),
``chart.png`` (latency distributions, throughput, scale-out) and ``report.md`` (the Performance section).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ops.bench import ratesearch
from ops.bench.processes import ROOT
from ops.bench.stats import Measurement, cdf, ratio, summarize

if TYPE_CHECKING:
    from ops.bench.runner import Options
    from ops.bench.systems import Bench

SYSTEMS = ("pipeline", "floor", "in-process", "co-located")
LOADS = ("sequential", "concurrent")
GOAL_SEQ_P50 = 1.25
GOAL_THROUGHPUT = 0.8
GOAL_CPU = 1.3
"""Pipeline/floor CPU per request at concurrency, at most."""
GOAL_STAGE = 1.2
"""Pipeline/floor added sequential p50 per stage, at most (the issue's "≤ 1.2x the floor's")."""
GOAL_COLOCATED_THROUGHPUT = 0.5
"""Co-located/in-process throughput at concurrency, at least."""
GOAL_COLOCATED_SEQ_P50 = 3.0
"""Co-located/in-process sequential p50, at most."""
PACKAGES = ("nats-py", "pydantic", "pydantic-core", "starlette", "uvicorn", "uvloop", "httptools", "structlog")
COLOURS = {"pipeline": "tab:blue", "floor": "tab:green", "in-process": "tab:orange", "co-located": "tab:purple"}
LOADGEN_BUSY = 0.8
"""Share of one core above which the load generator may itself limit the measurement."""
NOT_ACCOUNTED = ("loadgen",)
PAIRS = (("pipeline", "floor"), ("pipeline", "in-process"), ("co-located", "in-process"), ("co-located", "pipeline"))
"""The ratios computed (system / other), when the system was measured."""
"""Processes whose CPU is reported but not charged to the system under test."""


# -- assembling -----------------------------------------------------------------------------------------


def group_summary(group: Sequence[Measurement], server_labels: Sequence[str]) -> dict[str, Any]:
    """Pooled figures of one system under one load across rounds, with CPU seconds per request."""
    latencies = [n for m in group for n in m.latencies_ns]
    summary = summarize(latencies, sum(m.seconds for m in group), sum(m.failed for m in group)).as_dict()
    completed = sum(m.completed for m in group) or 1
    labels = list(dict.fromkeys(label for m in group for label in m.cpu_seconds))
    per_request = {label: sum(m.cpu_seconds.get(label, 0.0) for m in group) / completed for label in labels}
    charged = [k for k in labels if _charged(k, server_labels)]
    rounds = [summarize(m.latencies_ns, m.seconds, m.failed) for m in group]
    return {
        **summary,
        "p50_by_round": [r.p50 for r in rounds],
        "throughput_by_round": [r.throughput for r in rounds],
        "cpu_seconds_per_request": {k: round(v, 7) for k, v in per_request.items()},
        "cpu_seconds_per_request_total": round(sum(per_request[k] for k in charged), 7),
        "cdf_ms": cdf(latencies),
    }


def _charged(label: str, server_labels: Sequence[str]) -> bool:
    """Whether a process's CPU counts as the system's: its own processes and the broker, not the load generator."""
    return label not in NOT_ACCOUNTED and (label in server_labels or label == "nats-server")


def cpu_per_request(measurement: Measurement, server_labels: Sequence[str]) -> float:
    """CPU seconds the system (and the broker) spent per response of one measurement."""
    charged = sum(v for k, v in measurement.cpu_seconds.items() if _charged(k, server_labels))
    return charged / max(1, measurement.completed)


def environment(load_before: list[float], load_after: list[float], nats_version: str) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "nats_server": nats_version,
        "packages": packages,
        "git": _git(),
    }


def assemble(
    *,
    options: Options,
    bench: Bench,
    started: float,
    load_before: list[float],
    load_after: list[float],
    nats_version: str,
    ceiling: dict[str, Any],
    hop_sizes: dict[str, list[int]],
    response_size: int,
    processes: dict[str, list[str]],
    measurements: list[Measurement],
    scaleout: dict[str, Any] | None,
    colocated: Bench | None = None,
) -> dict[str, Any]:
    """The whole run as one JSON-able document: environment, raw measurements, summaries, ratios."""
    summary: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        summary[system] = {}
        for kind in ("sequential", "concurrent", "single"):
            group = [m for m in measurements if m.system == system and m.kind == kind]
            if group:
                summary[system][kind] = group_summary(group, processes.get(system, []))
    stages = bench.stages
    single_stages = len(bench.loaded.itinerary(bench.single))
    per_stage = {}
    for system, kinds in summary.items():
        if "sequential" in kinds and "single" in kinds and stages > single_stages:
            added = (kinds["sequential"]["p50"] - kinds["single"]["p50"]) / (stages - single_stages)
            per_stage[system] = {
                "p50_full_ms": kinds["sequential"]["p50"],
                "p50_single_ms": kinds["single"]["p50"],
                "added_p50_ms_per_stage": round(added, 4),
            }
    warmup = options.warmup
    loadgen_share = max(
        (m.cpu_seconds.get("loadgen", 0.0) / (m.seconds + warmup) for m in measurements if m.seconds > 0), default=0.0
    )
    ratios = _ratios(summary, measurements, stages - single_stages, processes)
    goals = _goals(ratios, per_stage)
    return {
        "benchmark": "backworks pipeline vs raw NATS floor vs in-process vs co-located",
        "command": "python ops/bench/run.py " + " ".join(options.argv),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "environment": environment(load_before, load_after, nats_version),
        "options": {
            "blueprint": relative(options.blueprint),
            "endpoint": bench.endpoint,
            "rounds": options.rounds,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "concurrency": options.concurrency,
            "storage": bench.loaded.model.nats.storage,
        },
        "stages": [s.label for s in bench.loaded.itinerary(bench.endpoint)],
        "single_stages": [s.label for s in bench.loaded.itinerary(bench.single)],
        "colocated": _colocated(colocated),
        "hop_sizes_bytes": hop_sizes,
        "response_body_bytes": response_size,
        "processes": processes,
        "loadgen_ceiling": ceiling,
        "loadgen_max_cpu_share": round(loadgen_share, 3),
        "summary": summary,
        "per_stage": per_stage,
        "ratios": ratios,
        "goals": goals,
        "scaleout": scaleout,
        "measurements": [m.as_dict() for m in measurements],
    }


def _colocated(bench: Bench | None) -> dict[str, Any] | None:
    """The co-located system's chain (each stage with its group) and groups."""
    if bench is None:
        return None
    itinerary = bench.loaded.itinerary(bench.endpoint)
    stages = [f"{s.label} [{s.colocate}]" if s.colocate else s.label for s in itinerary]
    return {"blueprint": relative(bench.path), "stages": stages, "groups": bench.loaded.model.groups()}


def _ratios(
    summary: dict[str, dict[str, Any]],
    measurements: list[Measurement],
    extra_stages: int,
    processes: dict[str, list[str]],
) -> dict[str, Any]:
    def figure(system: str, kind: str, key: str) -> float:
        return float(summary.get(system, {}).get(kind, {}).get(key, 0.0))

    result: dict[str, Any] = {}
    for system, other in PAIRS:
        if system not in summary:
            continue
        result[f"{system}/{other}"] = {
            "sequential_p50": ratio(figure(system, "sequential", "p50"), figure(other, "sequential", "p50")),
            "sequential_p99": ratio(figure(system, "sequential", "p99"), figure(other, "sequential", "p99")),
            "concurrent_p50": ratio(figure(system, "concurrent", "p50"), figure(other, "concurrent", "p50")),
            "concurrent_throughput": ratio(
                figure(system, "concurrent", "throughput"), figure(other, "concurrent", "throughput")
            ),
            "cpu_per_request_concurrent": ratio(
                figure(system, "concurrent", "cpu_seconds_per_request_total"),
                figure(other, "concurrent", "cpu_seconds_per_request_total"),
            ),
        }
    rounds = sorted({m.round for m in measurements})
    by_round = []
    for number in rounds:

        def found(system: str, kind: str, number: int = number) -> Measurement | None:
            return next((m for m in measurements if m.round == number and m.system == system and m.kind == kind), None)

        def one(system: str, kind: str) -> Any:
            measured = found(system, kind)
            return summarize(measured.latencies_ns, measured.seconds) if measured else None

        def cpu(system: str) -> float | None:
            measured = found(system, "concurrent")
            return cpu_per_request(measured, processes.get(system, [])) if measured else None

        seq_p, seq_f = one("pipeline", "sequential"), one("floor", "sequential")
        con_p, con_f = one("pipeline", "concurrent"), one("floor", "concurrent")
        single_p, single_f = one("pipeline", "single"), one("floor", "single")
        cpu_p, cpu_f = cpu("pipeline"), cpu("floor")
        seq_c, seq_i = one("co-located", "sequential"), one("in-process", "sequential")
        con_c, con_i = one("co-located", "concurrent"), one("in-process", "concurrent")
        by_round.append({
            "round": number,
            "sequential_p50_pipeline/floor": ratio(seq_p.p50, seq_f.p50) if seq_p and seq_f else None,
            "concurrent_throughput_pipeline/floor": (
                ratio(con_p.throughput, con_f.throughput) if con_p and con_f else None
            ),
            "cpu_per_request_concurrent_pipeline/floor": ratio(cpu_p, cpu_f) if cpu_p and cpu_f else None,
            "added_p50_ms_per_stage_pipeline": (
                round((seq_p.p50 - single_p.p50) / extra_stages, 4) if seq_p and single_p and extra_stages else None
            ),
            "added_p50_per_stage_pipeline/floor": (
                ratio(seq_p.p50 - single_p.p50, seq_f.p50 - single_f.p50)
                if seq_p and single_p and seq_f and single_f and seq_f.p50 > single_f.p50
                else None
            ),
            "sequential_p50_co-located/in-process": ratio(seq_c.p50, seq_i.p50) if seq_c and seq_i else None,
            "concurrent_throughput_co-located/in-process": (
                ratio(con_c.throughput, con_i.throughput) if con_c and con_i else None
            ),
        })  # fmt: skip
    result["pipeline/floor_by_round"] = by_round
    return result


def _goals(ratios: dict[str, Any], per_stage: dict[str, Any]) -> list[dict[str, Any]]:
    floor = ratios["pipeline/floor"]
    added = {system: per_stage.get(system, {}).get("added_p50_ms_per_stage") for system in ("pipeline", "floor")}
    # Only against a floor that adds time per stage: a noisy negative figure would make any pipeline "meet" it.
    stage = ratio(added["pipeline"], added["floor"]) if added["pipeline"] and (added["floor"] or 0) > 0 else None
    goals = [
        ("sequential p50, pipeline/floor", floor["sequential_p50"], "sequential_p50_pipeline/floor",
         f"<= {GOAL_SEQ_P50}", GOAL_SEQ_P50, True),
        ("throughput at concurrency, pipeline/floor", floor["concurrent_throughput"],
         "concurrent_throughput_pipeline/floor", f">= {GOAL_THROUGHPUT}", GOAL_THROUGHPUT, False),
        ("CPU per request at concurrency, pipeline/floor", floor["cpu_per_request_concurrent"],
         "cpu_per_request_concurrent_pipeline/floor", f"<= {GOAL_CPU}", GOAL_CPU, True),
        ("added p50 per stage, pipeline/floor", stage, "added_p50_per_stage_pipeline/floor", f"<= {GOAL_STAGE}",
         GOAL_STAGE, True),
    ]  # fmt: skip
    if (co_located := ratios.get("co-located/in-process")) is not None:
        goals += [
            ("sequential p50, co-located/in-process", co_located["sequential_p50"],
             "sequential_p50_co-located/in-process", f"<= {GOAL_COLOCATED_SEQ_P50}", GOAL_COLOCATED_SEQ_P50, True),
            ("throughput at concurrency, co-located/in-process", co_located["concurrent_throughput"],
             "concurrent_throughput_co-located/in-process", f">= {GOAL_COLOCATED_THROUGHPUT}",
             GOAL_COLOCATED_THROUGHPUT, False),
        ]  # fmt: skip
    found = []
    for name, value, key, target, bound, at_most in goals:
        rounds = [r[key] for r in ratios["pipeline/floor_by_round"] if r.get(key) is not None]
        found.append({
            "goal": name,
            "measured": value,
            "by_round": rounds,
            "median_of_rounds": round(statistics.median(rounds), 4) if rounds else None,
            "target": target,
            "met": None if value is None else (value <= bound if at_most else value >= bound),
        })  # fmt: skip
    return found


# -- writing --------------------------------------------------------------------------------------------


def write(results: dict[str, Any], out: Path) -> None:
    """results.json, table.txt (and the same table on the terminal), chart.png, report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    console = Console(record=True, width=130)
    for table in tables(results):
        console.print(table)
    share = results["loadgen_max_cpu_share"]
    note = " (close to a full core: it may be the bottleneck)" if share > LOADGEN_BUSY else ""
    console.print(f"load generator: at most {share * 100:.0f}% of one core during a measurement{note}", highlight=False)
    console.print(f"results: {out}/results.json, chart.png, table.txt, report.md", highlight=False)
    (out / "table.txt").write_text(console.export_text())
    chart(results, out / "chart.png")
    (out / "report.md").write_text(markdown(results))


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def load_label(results: dict[str, Any], kind: str) -> str:
    if kind == "concurrent":
        return f"{results['options']['concurrency']} in flight"
    return "1 in flight" if kind == "sequential" else "1 in flight, handler only"


def main_rows(results: dict[str, Any]) -> list[list[str]]:
    summary = results["summary"]
    rows = []
    for kind in LOADS:
        floor = summary.get("floor", {}).get(kind, {})
        for system in SYSTEMS:
            figures = summary.get(system, {}).get(kind)
            if not figures:
                continue
            vs_floor = (
                f"{_x(ratio(figures['p50'], floor['p50']))} / {_x(ratio(figures['throughput'], floor['throughput']))}"
                if floor else "n/a"
            )  # fmt: skip
            rows.append([
                system, load_label(results, kind), _ms(figures["p50"]), _ms(figures["p95"]), _ms(figures["p99"]),
                f"{figures['throughput']:.0f}", _ms(figures["cpu_seconds_per_request_total"] * 1000), vs_floor,
                str(figures["failed"]),
            ])  # fmt: skip
    return rows


MAIN_HEADERS = ["system", "load", "p50 ms", "p95 ms", "p99 ms", "req/s", "CPU ms/req", "p50 / req/s vs floor", "failed"]


def stage_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for system in SYSTEMS:
        figures = results["per_stage"].get(system)
        if figures:
            rows.append([
                system, _ms(figures["p50_full_ms"]), _ms(figures["p50_single_ms"]),
                _ms(figures["added_p50_ms_per_stage"]),
            ])  # fmt: skip
    return rows


def stage_headers(results: dict[str, Any]) -> list[str]:
    full, single = len(results["stages"]), len(results["single_stages"])
    return ["system", f"p50 ms, {full} stages", f"p50 ms, {single} stage", "added p50 ms per stage"]


def cpu_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for system in SYSTEMS:
        for kind in LOADS:
            figures = results["summary"].get(system, {}).get(kind)
            if not figures:
                continue
            for label, seconds in figures["cpu_seconds_per_request"].items():
                rows.append([system, load_label(results, kind), label, f"{seconds * 1e6:.0f}"])
    return rows


def cpu_by_process_rows(results: dict[str, Any]) -> list[list[str]]:
    """``cpu_rows`` with one row per system and load, each process's CPU µs per request in one cell (the markdown
    report)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for system, load, label, micros in cpu_rows(results):
        grouped.setdefault((system, load), []).append(f"{label} {micros}")
    return [[system, load, ", ".join(cells)] for (system, load), cells in grouped.items()]


CPU_BY_PROCESS_HEADERS = ["system", "load", "CPU µs per request, by process (loadgen: not charged to the system)"]


def goal_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for goal in results["goals"]:
        in_ms = "ms" in goal["goal"]

        def shown(value: float | None, in_ms: bool = in_ms) -> str:
            return "n/a" if value is None else (f"{value:.3f}" if in_ms else f"{value:.2f}x")

        met = {True: "yes", False: "no", None: "n/a"}[goal["met"]]
        rounds = ", ".join(shown(value) for value in goal["by_round"])
        rows.append([goal["goal"], shown(goal["measured"]), rounds, goal["target"], met])
    in_process = results["ratios"]["pipeline/in-process"]
    rows.append(["sequential p50, pipeline/in-process", _x(in_process["sequential_p50"]), "", "(reported)", ""])
    throughput = _x(in_process["concurrent_throughput"])
    rows.append(["throughput at concurrency, pipeline/in-process", throughput, "", "(reported)", ""])
    return rows


GOAL_HEADERS = ["ratio", "all rounds pooled", "each round", "target", "met (pooled)"]


def scale_rows(results: dict[str, Any], key: str = "scaleout") -> list[list[str]]:
    scaleout = results.get(key)
    if not scaleout or not scaleout["points"]:
        return []
    base = scaleout["points"][0]["throughput"] or 1.0
    warmup = results["options"]["warmup_s"]
    return [
        [str(p["replicas"]), f"{p['throughput']:.0f}", f"{p['throughput'] / base:.2f}x", _ms(p["p50"]), _ms(p["p99"]),
         f"{slow_cores(p, scaleout['slow_stage'], warmup):.2f}", str(p["failed"])]
        for p in scaleout["points"]
    ]  # fmt: skip


def slow_cores(point: dict[str, Any], stage: str, warmup: float) -> float:
    """CPU cores the slow stage's replicas used together during a scale-out point (CPU seconds / wall seconds)."""
    label = f"stage {stage}"
    used = sum(float(v) for k, v in point["cpu_seconds"].items() if k == label or k.startswith(f"{label}#"))
    return used / max(1e-9, float(point["seconds"]) + warmup)


SCALE_HEADERS = ["replicas of slow stage", "req/s", "speed-up", "p50 ms", "p99 ms", "slow stage cores", "failed"]


def ceiling_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for kind, figures in results["loadgen_ceiling"].items():
        loadgen_cpu = figures["cpu_seconds"].get("loadgen", 0.0) / max(1, figures["completed"])
        rows.append([
            load_label(results, kind), f"{figures['throughput']:.0f}", _ms(figures["p50"]), f"{loadgen_cpu * 1e6:.0f}",
        ])  # fmt: skip
    return rows


CEILING_HEADERS = ["load", "req/s", "p50 ms", "loadgen CPU µs/req"]


def _table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def tables(results: dict[str, Any]) -> list[Table]:
    options = results["options"]
    stages = " -> ".join(results["stages"])
    title = (
        f"Backworks benchmark: {len(results['stages'])} stages ({stages}); {options['rounds']} rounds x "
        f"{options['duration_s']} s per load, alternating; storage {options['storage']}"
    )
    found = [
        _table(title, MAIN_HEADERS, main_rows(results)),
        _table("Per-stage cost (sequential p50)", stage_headers(results), stage_rows(results)),
        _table("Goals (ratios measured in this run)", GOAL_HEADERS, goal_rows(results)),
        _table("CPU per request by process (µs)", ["system", "load", "process", "CPU µs/req"], cpu_rows(results)),
        _table("Load generator ceiling (bare endpoint)", CEILING_HEADERS, ceiling_rows(results)),
    ]
    if scale_rows(results, "scaleout_cpu"):
        scaleout = results["scaleout_cpu"]
        found.append(
            _table(
                f"Scale-out, CPU-bound: {scaleout['slow_stage']} burns {scaleout['slow_stage_delay_ms']} ms of CPU per "
                f"request, {scaleout['concurrency']} requests in flight, {scaleout['cpus']} CPUs",
                SCALE_HEADERS,
                scale_rows(results, "scaleout_cpu"),
            )
        )
    if ratesearch.rows(results):
        found.append(_table(ratesearch.title(results), ratesearch.HEADERS, ratesearch.rows(results)))
    if scale_rows(results):
        scaleout = results["scaleout"]
        found.append(
            _table(
                f"Scale-out: {scaleout['slow_stage']} ({scaleout['slow_stage_delay_ms']} ms await, "
                f"{scaleout['slow_inflight_per_replica']} in flight per replica), "
                f"{scaleout['concurrency']} requests in flight",
                SCALE_HEADERS,
                scale_rows(results),
            )
        )
    return found


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The Performance section (from this run's figures only)."""
    env = results["environment"]
    options = results["options"]
    floor = results["ratios"]["pipeline/floor"]
    in_process = results["ratios"]["pipeline/in-process"]
    per_stage = results["per_stage"].get("pipeline", {})
    parts = [
        "## Performance",
        "",
        "Measured with:",
        "",
        "```",
        results["command"].strip(),
        "```",
        "",
        f"Run {results['started_at']} on {env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}, "
        f"{env['nats_server']}, JetStream storage `{options['storage']}`; load average "
        f"{env['load_average_before']} before, {env['load_average_after']} after. The machine was shared: read the "
        "ratios (all systems measured alternately in the same run), not the absolute numbers.",
        "",
        f"Stages: {' -> '.join(results['stages'])}. Every system was measured under every load in each of "
        f"{options['rounds']} rounds ({options['duration_s']} s after {options['warmup_s']} s of warm-up), the system "
        "order rotating from round to round; percentiles pool the rounds.",
        "",
        _md_table(MAIN_HEADERS, main_rows(results)),
        "",
        "CPU ms/req: CPU time of the system's processes plus nats-server, per request.",
        "",
        f"- **pipeline/floor**: sequential p50 {_x(floor['sequential_p50'])}, throughput at "
        f"{options['concurrency']} in flight {_x(floor['concurrent_throughput'])}, "
        f"CPU per request {_x(floor['cpu_per_request_concurrent'])}",
        f"- **pipeline/in-process**: sequential p50 {_x(in_process['sequential_p50'])}, throughput at "
        f"{options['concurrency']} in flight {_x(in_process['concurrent_throughput'])}, "
        f"CPU per request {_x(in_process['cpu_per_request_concurrent'])}",
        f"- **per pipeline stage**: +{per_stage.get('added_p50_ms_per_stage', float('nan')):.3f} ms p50",
        *_colocated_lines(results),
        "",
        "### Goals",
        "",
        _md_table(GOAL_HEADERS, goal_rows(results)),
        "",
        "### Per-stage cost",
        "",
        _md_table(stage_headers(results), stage_rows(results)),
        "",
        "### CPU per request, by process",
        "",
        _md_table(CPU_BY_PROCESS_HEADERS, cpu_by_process_rows(results)),
        "",
    ]
    if scale_rows(results):
        scaleout = results["scaleout"]
        parts += [
            "### Scale-out",
            "",
            f"Stages {' -> '.join(scaleout['stages'])}; `{scaleout['slow_stage']}` awaits "
            f"{scaleout['slow_stage_delay_ms']} ms (I/O-bound) and each replica takes "
            f"{scaleout['slow_inflight_per_replica']} messages at once; {scaleout['concurrency']} requests in flight.",
            "",
            _md_table(SCALE_HEADERS, scale_rows(results)),
            "",
        ]
    if scale_rows(results, "scaleout_cpu"):
        scaleout = results["scaleout_cpu"]
        parts += [
            "### Scale-out of a CPU-bound stage",
            "",
            f"The same, with `{scaleout['slow_stage']}` burning {scaleout['slow_stage_delay_ms']} ms of CPU per "
            f"request on a {scaleout['cpus']}-CPU machine: replicas help until the cores are busy.",
            "",
            _md_table(SCALE_HEADERS, scale_rows(results, "scaleout_cpu")),
            "",
        ]
    if ratesearch.rows(results):
        parts += ["### Open loop", "", ratesearch.title(results) + ".", "",
                  _md_table(ratesearch.HEADERS, ratesearch.rows(results)), ""]  # fmt: skip
    parts += [
        "### Load generator ceiling",
        "",
        _md_table(CEILING_HEADERS, ceiling_rows(results)),
        "",
        f"During the measurements the load generator used at most {results['loadgen_max_cpu_share'] * 100:.0f}% "
        "of one core, so it was not the bottleneck.",
        "",
    ]
    return "\n".join(parts)


def _colocated_lines(results: dict[str, Any]) -> list[str]:
    """The co-located system's line of the summary: its chain, and its ratios to in-process and the pipeline."""
    described, ratios = results.get("colocated"), results["ratios"]
    if not described or "co-located/in-process" not in ratios:
        return []
    in_process, pipeline = ratios["co-located/in-process"], ratios["co-located/pipeline"]
    concurrency = results["options"]["concurrency"]
    return [
        f"- **co-located/in-process** ({' -> '.join(described['stages'])}): sequential p50 "
        f"{_x(in_process['sequential_p50'])}, throughput at {concurrency} in flight "
        f"{_x(in_process['concurrent_throughput'])}, CPU per request {_x(in_process['cpu_per_request_concurrent'])}",
        f"- **co-located/pipeline**: sequential p50 {_x(pipeline['sequential_p50'])}, throughput at {concurrency} in "
        f"flight {_x(pipeline['concurrent_throughput'])}, CPU per request {_x(pipeline['cpu_per_request_concurrent'])}",
    ]


def chart(results: dict[str, Any], target: Path) -> None:
    """Latency distributions (sequential, concurrent), throughput per system, and the scale-out curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    summary = results["summary"]
    for axis, kind in zip(axes[0], LOADS, strict=True):
        for system in SYSTEMS:
            figures = summary.get(system, {}).get(kind)
            if not figures or not figures["cdf_ms"]:
                continue
            points = figures["cdf_ms"]
            fractions = [i / (len(points) - 1) * 100 for i in range(len(points))]
            axis.plot(points, fractions, label=f"{system} (p50 {figures['p50']:.2f} ms)", color=COLOURS[system])
        axis.set_xscale("log")
        axis.set_xlabel("latency (ms, log scale)")
        axis.set_ylabel("percentile")
        axis.set_title(f"Latency distribution, {load_label(results, kind)}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right")
    axis = axes[1][0]
    width = 0.38
    for offset, kind in ((-width / 2, "sequential"), (width / 2, "concurrent")):
        values = [summary.get(system, {}).get(kind, {}).get("throughput", 0.0) for system in SYSTEMS]
        bars = axis.bar([i + offset for i in range(len(SYSTEMS))], values, width, label=load_label(results, kind))
        axis.bar_label(bars, fmt="%.0f", fontsize=8)
    axis.set_xticks(range(len(SYSTEMS)), SYSTEMS)
    axis.set_ylabel("requests per second")
    axis.set_title("Throughput")
    axis.legend()
    axis = axes[1][1]
    scaleout = results.get("scaleout")
    if scaleout and scaleout["points"]:
        replicas = [p["replicas"] for p in scaleout["points"]]
        throughput = [p["throughput"] for p in scaleout["points"]]
        base = throughput[0] / replicas[0] if replicas[0] else 0.0
        axis.plot(replicas, throughput, marker="o", label="measured")
        axis.plot(replicas, [base * r for r in replicas], linestyle="--", color="grey", label="linear from 1 replica")
        axis.set_xticks(replicas)
        axis.set_xlabel(f"replicas of {scaleout['slow_stage']} (only that stage)")
        axis.set_ylabel("requests per second")
        axis.set_title(f"Scale-out of a {scaleout['slow_stage_delay_ms']} ms I/O-bound stage")
        axis.grid(True, alpha=0.3)
        axis.legend()
    else:
        axis.set_axis_off()
        axis.text(0.5, 0.5, "scale-out not run", ha="center", va="center")
    figure.suptitle(f"Backworks benchmark ({len(results['stages'])} stages, {results['started_at']})")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
