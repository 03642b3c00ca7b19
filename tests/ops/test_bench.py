"""The benchmark (ops/bench): its pure parts, and one end-to-end run with tiny counts (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ops.bench.floor import SINGLE_PREFIX
from ops.bench.processes import Children
from ops.bench.report import _goals, _ratios
from ops.bench.stats import Measurement, cdf, summarize
from ops.bench.systems import BENCH_QUERY, PipelineSystem, colocated, derive, request_path
from tests.files import ROOT

SMOKE_TIMEOUT = 240


def test_percentiles_come_from_the_one_shared_implementation() -> None:
    samples = [n * 1_000_000 for n in range(100, 0, -1)]  # 1..100 ms, unordered
    figures = summarize(samples, seconds=2.0)
    assert (figures.p50, figures.p95, figures.p99, figures.max) == (50.5, 95.05, 99.01, 100.0)
    assert summarize([], seconds=1.0).p99 == 0
    figures = summarize([2_000_000, 1_000_000, 3_000_000], seconds=0.5, failed=1)
    assert (figures.count, figures.throughput, figures.p50, figures.max, figures.failed) == (3, 6.0, 2.0, 3.0, 1)
    assert cdf(samples, points=5) == [1.0, 25.75, 50.5, 75.25, 100.0]
    assert cdf([], points=5) == []


def _measured(round_: int, system: str, kind: str, ms: float, cpu: dict[str, float], completed: int) -> Measurement:
    latencies = [int(ms * 1_000_000)] * 10
    return Measurement(round_, system, kind, 1, latencies, 1.0, 0, {}, [], cpu, completed)


def test_the_goals_are_the_issue_s_six_ratios_from_the_same_run() -> None:
    processes = {"pipeline": ["gateway", "stage a"], "floor": ["floor gateway", "hop 0"]}
    pipeline_cpu = {"gateway": 0.1, "stage a": 0.1, "nats-server": 0.1}
    measured = [
        # pipeline: 5-stage p50 5 ms, 1-stage 1 ms -> 1 ms per added stage; 100 responses, 0.3 s CPU incl. broker
        _measured(0, "pipeline", "sequential", 5.0, {}, 10),
        _measured(0, "pipeline", "single", 1.0, {}, 10),
        _measured(0, "pipeline", "concurrent", 10.0, {**pipeline_cpu, "loadgen": 5.0}, 100),
        # floor: 3 ms / 1 ms -> 0.5 ms per added stage; 0.1 s CPU for 100 responses
        _measured(0, "floor", "sequential", 3.0, {}, 10),
        _measured(0, "floor", "single", 1.0, {}, 10),
        _measured(0, "floor", "concurrent", 5.0, {"floor gateway": 0.05, "hop 0": 0.05, "loadgen": 5.0}, 100),
    ]
    summary = {
        "pipeline": {"sequential": {"p50": 5.0}, "concurrent": {"throughput": 500.0,
                                                                 "cpu_seconds_per_request_total": 0.003}},
        "floor": {"sequential": {"p50": 3.0}, "concurrent": {"throughput": 1000.0,
                                                              "cpu_seconds_per_request_total": 0.001}},
    }  # fmt: skip
    per_stage = {"pipeline": {"added_p50_ms_per_stage": 1.0}, "floor": {"added_p50_ms_per_stage": 0.5}}
    ratios = _ratios(summary, measured, 4, processes)
    goals = {goal["goal"]: goal for goal in _goals(ratios, per_stage)}
    assert list(goals) == [
        "sequential p50, pipeline/floor",
        "throughput at concurrency, pipeline/floor",
        "CPU per request at concurrency, pipeline/floor",
        "added p50 per stage, pipeline/floor",
    ]
    assert goals["CPU per request at concurrency, pipeline/floor"]["measured"] == 3.0
    # the load generator's CPU is not charged to either system
    assert goals["CPU per request at concurrency, pipeline/floor"]["by_round"] == [3.0]
    assert goals["CPU per request at concurrency, pipeline/floor"]["target"] == "<= 1.3"
    assert goals["added p50 per stage, pipeline/floor"]["measured"] == 2.0
    assert goals["added p50 per stage, pipeline/floor"]["by_round"] == [2.0]
    assert goals["added p50 per stage, pipeline/floor"]["target"] == "<= 1.2"
    assert not any(goal["met"] for goal in goals.values())
    # A floor whose 1-stage p50 came out above its 5-stage one (noise) gives no per-stage ratio, not a met goal.
    noisy = _goals(ratios, {**per_stage, "floor": {"added_p50_ms_per_stage": -0.1}})
    assert [(goal["measured"], goal["met"]) for goal in noisy if "per stage" in goal["goal"]] == [(None, None)]


def test_derived_blueprint_adds_a_handler_only_twin(tmp_path: Path) -> None:
    bench = derive(ROOT / "ops" / "bench" / "bench.yaml", None, tmp_path / "bench.yaml")
    assert bench.endpoint == "bench"
    assert [s.label for s in bench.loaded.itinerary(bench.endpoint)] == [
        "keys.request", "limit.request", "bench-handler.request", "secure.response", "limit.response",
    ]  # fmt: skip
    assert [s.label for s in bench.loaded.itinerary(bench.single)] == ["bench-single-handler.request"]
    assert bench.full_path == f"/bench/bench?{BENCH_QUERY}", "the api-key stage reads the key from the query"
    assert bench.single_path == f"{SINGLE_PREFIX}/bench/bench?{BENCH_QUERY}"
    assert bench.instances() == ["keys", "limit", "bench-handler", "secure", "bench-single-handler"]
    assert request_path("/a/{x}/b/{y:int}") == "/a/bench/b/bench"


def test_the_co_located_twin_runs_the_same_chain_under_its_own_names_in_one_group(tmp_path: Path) -> None:
    bench = derive(ROOT / "ops" / "bench" / "bench.yaml", None, tmp_path / "bench.yaml")
    same, twin = colocated(bench, None, tmp_path / "colocated.yaml")
    assert same.path == twin.path and (same.endpoint, same.single) == (bench.endpoint, bench.single)
    assert same.loaded.itinerary(same.endpoint) == bench.loaded.itinerary(bench.endpoint), "the pipeline is unchanged"
    assert (twin.endpoint, twin.single) == ("co-bench", "co-bench-single")
    assert [(s.label, s.colocate) for s in twin.loaded.itinerary(twin.endpoint)] == [
        ("co-keys.request", "cheap"), ("co-limit.request", "cheap"), ("co-bench-handler.request", "cheap"),
        ("co-secure.response", "cheap"), ("co-limit.response", "cheap"),
    ]  # fmt: skip
    assert twin.full_path == f"/co{bench.full_path}" and twin.single_path == f"/co{bench.single_path}"
    assert twin.loaded.instances["co-limit"].config == bench.loaded.instances["limit"].config
    services = PipelineSystem("co-located", Children(tmp_path), bench=twin).services()
    assert services == ["cheap", "co-bench-single-handler"], "one process for the group"
    assert PipelineSystem("pipeline", Children(tmp_path), bench=same).services() == bench.instances(), "not the twin's"
    _, partial = colocated(bench, ["keys", "secure"], tmp_path / "partial.yaml")
    assert partial.loaded.model.groups() == {"cheap": ["co-keys", "co-secure"]}


@pytest.mark.bench
@pytest.mark.e2e
@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_benchmark_runs_end_to_end_and_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    command = [
        sys.executable, str(ROOT / "ops" / "bench" / "run.py"), "--out", str(out), "--rounds", "1",
        "--duration", "0.3", "--warmup", "0.1", "--concurrency", "8", "--scale", "1,2", "--scale-duration", "0.5",
        "--open-loop", "--open-loop-steps", "2", "--open-loop-duration", "0.3", "--open-loop-connections", "8",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"pipeline", "floor", "in-process", "co-located"}
    for system, kinds in results["summary"].items():
        assert set(kinds) == {"sequential", "concurrent", "single"}, system
        for kind, figures in kinds.items():
            assert figures["count"] > 0, (system, kind)
            assert figures["failed"] == 0, (system, kind)
            assert figures["cpu_seconds_per_request"], (system, kind)
    assert len(results["hop_sizes_bytes"]["full"]) == len(results["stages"]) + 1
    assert {"sequential_p50", "concurrent_throughput"} <= set(results["ratios"]["pipeline/floor"])
    assert {"sequential_p50", "concurrent_throughput"} <= set(results["ratios"]["co-located/in-process"])
    assert results["colocated"]["groups"] == {"cheap": ["co-keys", "co-limit", "co-secure", "co-bench-handler"]}
    assert results["processes"]["co-located"] == ["gateway", "stage cheap", "stage co-bench-single-handler"]
    assert [p["replicas"] for p in results["scaleout"]["points"]] == [1, 2]
    assert all(p["count"] > 0 and p["failed"] == 0 for p in results["scaleout"]["points"])
    assert [p["replicas"] for p in results["scaleout_cpu"]["points"]] == [1, 2]
    assert results["scaleout_cpu"]["cpu_bound"] and results["scaleout_cpu"]["cpus"]
    assert all(p["count"] > 0 and p["failed"] == 0 for p in results["scaleout_cpu"]["points"])
    assert set(results["open_loop"]) == {"pipeline", "floor", "in-process", "co-located"}
    for system, found in results["open_loop"].items():
        assert 1 <= len(found["points"]) <= 2, system
        assert all(p["intended"] > 0 and p["rate"] > 0 for p in found["points"]), system
        sustained = [p["rate"] for p in found["points"] if p["failed"] == 0 and p["p99"] <= found["bound_ms"]]
        assert found["sustained_rps"] == (max(sustained) if sustained else None), system
    assert results["environment"]["python"]

    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.txt").read_text()
    assert all(name in table for name in ("pipeline", "floor", "in-process", "co-located", "Scale-out", "CPU-bound",
                                          "Open loop"))  # fmt: skip
    targets = [goal["target"] for goal in results["goals"]]
    assert targets == ["<= 1.25", ">= 0.8", "<= 1.3", "<= 1.2", "<= 3.0", ">= 0.5"], "the issue's six goals"
    report = (out / "report.md").read_text()
    assert report.startswith("## Performance")
    assert "CPU per request at concurrency, pipeline/floor" in report
    assert "### CPU per request, by process" in report and "nats-server" in report

    left = [pid for pid in results["pids"] if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not left, f"processes left running: {left}"
