"""The benchmark run: start everything on loopback, measure the three systems alternately, report.

Order of a run:
1. an embedded nats-server (the same one for every system), Backworks' streams and the floor's stream
   declared with the blueprint's storage;
2. the load generator's ceiling against a bare endpoint;
3. the pipeline, then (with the payload sizes measured on it) the raw floor and the in-process baseline, and the
   pipeline's co-located twin (the same chain, its stages in one ``colocate:`` group, one process);
4. ``rounds`` rounds; in each, every kind of load (sequential, concurrent, handler-only sequential) is
   run on every system back to back, the system order rotating from round to round, so slow drift of a
   shared machine spreads over all systems instead of biasing one;
5. the scale-out scenario (its own pipeline with one slow stage, growing its replicas);
6. the table, the JSON, the chart and a Markdown section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig

from backworks.contracts.names import INBOX_PREFIX, PIPELINE_STREAM
from backworks.local.embedded import EmbeddedNats, find_binary
from backworks.pipeline import broker, logs, nats_auth
from backworks.pipeline.nats_auth import NatsAuth
from backworks.pipeline.permissions import ADMIN, identities
from ops.bench import floor, ratesearch, report
from ops.bench.processes import ROOT, Child, Children, python_module
from ops.bench.stats import Measurement, summarize
from ops.bench.systems import (
    BareSystem,
    Bench,
    FloorSystem,
    InProcessSystem,
    PipelineSystem,
    System,
    colocated,
    derive,
)

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_BLUEPRINT = BENCH_DIR / "bench.yaml"
DEFAULT_SCALE_BLUEPRINT = BENCH_DIR / "scaleout.yaml"
DEFAULT_CPU_SCALE_BLUEPRINT = BENCH_DIR / "scaleout-cpu.yaml"
DEFAULT_OUT = ROOT / "bench-results"
SYSTEMS = ("pipeline", "floor", "in-process", "co-located")
KINDS = ("sequential", "concurrent", "single")
"""``single``: sequential on the handler-only chain, to price one stage."""
LOADGEN_TIMEOUT_MARGIN = 60.0


@dataclass
class Options:
    blueprint: Path
    endpoint: str | None
    rounds: int
    duration: float
    warmup: float
    concurrency: int
    out: Path
    scale: list[int]
    scale_blueprint: Path
    slow_stage: str
    slow_inflight: int
    scale_duration: float
    colocate: list[str] | None = None
    """Instances the co-located system puts in its group (None: every stage of the measured chain)."""
    cpu_scale_blueprint: Path = DEFAULT_CPU_SCALE_BLUEPRINT
    scale_cpu: bool = True
    open_loop: bool = False
    open_loop_p99_ms: float = ratesearch.DEFAULT_P99_BOUND_MS
    open_loop_duration: float = 0.0
    open_loop_connections: int = ratesearch.DEFAULT_CONNECTIONS
    open_loop_steps: int = ratesearch.DEFAULT_MAX_STEPS
    argv: list[str] = field(default_factory=list)


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python ops/bench/run.py",
        description="Backworks benchmark: the pipeline vs the raw NATS floor vs an in-process Starlette app, "
        "measured alternately in one run on loopback; then the scale-out of one slow stage.",
    )
    parser.add_argument("--blueprint", type=Path, default=DEFAULT_BLUEPRINT, help="stage set to measure")
    parser.add_argument("--endpoint", help="endpoint of the blueprint to measure (default: the first)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per system, load and round")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of unmeasured load before each measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight for the concurrent load")
    parser.add_argument("--out", type=Path, help="output directory (default: bench-results/<timestamp>)")
    parser.add_argument("--scale", default="1,2,4,8", help="replica counts of the slow stage; '' skips scale-out")
    parser.add_argument("--scale-blueprint", type=Path, default=DEFAULT_SCALE_BLUEPRINT)
    parser.add_argument("--slow-stage", default="slow", help="instance of the scale-out blueprint to replicate")
    parser.add_argument("--slow-inflight", type=int, default=4, help="messages one slow replica works on at once")
    parser.add_argument("--scale-duration", type=float, help="seconds per replica count (default: --duration)")
    parser.add_argument(
        "--colocate",
        help="comma-separated instances the co-located system runs in one process (default: every stage of the chain)",
    )
    parser.add_argument(
        "--cpu-scale-blueprint",
        type=Path,
        default=DEFAULT_CPU_SCALE_BLUEPRINT,
        help="the scale-out scenario again with a CPU-bound slow stage (its `--slow-stage`)",
    )
    parser.add_argument("--no-cpu-scale", action="store_true", help="skip the CPU-bound scale-out")
    parser.add_argument(
        "--open-loop",
        action="store_true",
        help="also find each system's highest fixed arrival rate with p99 under --open-loop-p99-ms",
    )
    parser.add_argument(
        "--open-loop-p99-ms",
        type=float,
        default=ratesearch.DEFAULT_P99_BOUND_MS,
        help=f"p99 bound of the open loop (default {ratesearch.DEFAULT_P99_BOUND_MS:g} ms)",
    )
    parser.add_argument("--open-loop-duration", type=float, help="seconds per rate tried (default: --duration)")
    parser.add_argument(
        "--open-loop-connections",
        type=int,
        default=ratesearch.DEFAULT_CONNECTIONS,
        help=f"connections of the open loop (default {ratesearch.DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--open-loop-steps",
        type=int,
        default=ratesearch.DEFAULT_MAX_STEPS,
        help=f"rates tried per system at most (default {ratesearch.DEFAULT_MAX_STEPS})",
    )
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Options(
        blueprint=args.blueprint.resolve(),
        endpoint=args.endpoint,
        rounds=max(1, args.rounds),
        duration=args.duration,
        warmup=args.warmup,
        concurrency=max(1, args.concurrency),
        out=(args.out or DEFAULT_OUT / stamp).resolve(),
        scale=[int(n) for n in args.scale.split(",") if n.strip()],
        scale_blueprint=args.scale_blueprint.resolve(),
        slow_stage=args.slow_stage,
        slow_inflight=args.slow_inflight,
        scale_duration=args.scale_duration if args.scale_duration is not None else args.duration,
        colocate=[name.strip() for name in args.colocate.split(",") if name.strip()] if args.colocate else None,
        cpu_scale_blueprint=args.cpu_scale_blueprint.resolve(),
        scale_cpu=not args.no_cpu_scale,
        open_loop=args.open_loop,
        open_loop_p99_ms=args.open_loop_p99_ms,
        open_loop_duration=args.open_loop_duration if args.open_loop_duration is not None else args.duration,
        open_loop_connections=max(1, args.open_loop_connections),
        open_loop_steps=max(1, args.open_loop_steps),
        argv=argv,
    )


class LoadGenerator:
    """The load generator process: one JSON job per line in, one JSON result per line out."""

    def __init__(self, children: Children) -> None:
        self.child = children.spawn(
            "loadgen", python_module("ops.bench.loadgen"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        stdout = self.child.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited; see {self.child.log}")
        result: dict[str, Any] = json.loads(line)
        if "fatal" in result:
            raise RuntimeError(f"load generator: {result['fatal']}")
        return result

    def run(self, port: int, path: str, connections: int, duration: float, warmup: float) -> dict[str, Any]:
        stdin = self.child.process.stdin
        assert stdin is not None
        job = {"host": "127.0.0.1", "port": port, "path": path, "connections": connections}
        stdin.write((json.dumps({**job, "duration": duration, "warmup": warmup}) + "\n").encode())
        stdin.flush()
        return self._read()

    def run_open(
        self, port: int, path: str, rate: float, duration: float, warmup: float, connections: int
    ) -> dict[str, Any]:
        """One open-loop job (``ops.bench.openloop``): ``rate`` requests per second, whatever the responses do."""
        stdin = self.child.process.stdin
        assert stdin is not None
        job = {"host": "127.0.0.1", "port": port, "path": path, "rate": rate, "connections": connections}
        stdin.write((json.dumps({**job, "duration": duration, "warmup": warmup}) + "\n").encode())
        stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.child.process.stdin is not None:
            self.child.process.stdin.close()


class Run:
    """Everything one benchmark run started and measured."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.work = options.out / "work"
        self.children = Children(
            options.out / "logs",
            env={"BACKWORKS_STATE_DIR": str(self.work / "state"), "BACKWORKS_LOG_LEVEL": "warning",
                 "BACKWORKS_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.nats: EmbeddedNats | None = None
        self.nats_child: Child | None = None
        self.loadgen: LoadGenerator | None = None
        self.measurements: list[Measurement] = []
        self.results: dict[str, Any] = {}

    # -- infrastructure -------------------------------------------------------------------------------

    def start_broker(self, storage: str) -> str:
        (self.options.out / "logs").mkdir(parents=True, exist_ok=True)
        # The children's state directory holds the keys the broker trusts: every service connects as its identity.
        keys = nats_auth.keyring(self.work / "state")
        log_file = self.options.out / "logs" / "nats-server.log"
        self.nats = EmbeddedNats(self.work / "jetstream", log_file=log_file, keyring=keys)
        self.nats.start()
        assert self.nats.process is not None
        self.nats_child = Child("nats-server", self.nats.process, self.options.out / "logs" / "nats-server.log")
        asyncio.run(declare(self.nats.url, storage, self.nats.auth(ADMIN)))
        return self.nats.url

    def trust(self, bench: Bench) -> None:
        """The broker trusts ``bench``'s services (gateway, one identity per stage), as ``backworks up`` does."""
        assert self.nats is not None
        self.nats.admit(identities(bench.loaded).values())

    def close(self) -> None:
        if self.loadgen is not None:
            self.loadgen.close()
        self.children.stop()
        if self.nats is not None:
            self.nats.stop()

    # -- measuring ------------------------------------------------------------------------------------

    def measure(self, system: System, kind: str, round_: int, duration: float) -> Measurement:
        assert self.loadgen is not None and self.nats_child is not None
        system.check()
        connections = self.options.concurrency if kind == "concurrent" else 1
        path = system.single_path if kind == "single" else system.full_path
        accounted = [*system.processes, self.nats_child, self.loadgen.child]
        before = {child.label: child.cpu_seconds() for child in accounted}
        result = self.loadgen.run(system.port, path, connections, duration, self.options.warmup)
        after = {child.label: child.cpu_seconds() for child in accounted}
        statuses: dict[str, int] = result["statuses"]
        failed = sum(n for status, n in statuses.items() if not status.startswith("2")) + result["error_count"]
        measurement = Measurement(
            round=round_,
            system=system.name,
            kind=kind,
            connections=connections,
            latencies_ns=result["latencies_ns"],
            seconds=result["elapsed"],
            failed=failed,
            statuses=statuses,
            errors=result["errors"],
            cpu_seconds={label: after[label] - before[label] for label in before},
            completed=result["completed"],
        )
        self.measurements.append(measurement)
        figures = summarize(measurement.latencies_ns, measurement.seconds, failed)
        print(
            f"  round {round_} {system.name:<10} {kind:<10} {figures.count:>7} req  p50 {figures.p50:7.3f} ms  "
            f"p99 {figures.p99:7.3f} ms  {figures.throughput:9.1f} req/s" + (f"  FAILED {failed}" if failed else ""),
            flush=True,
        )
        return measurement

    def loadgen_ceiling(self) -> dict[str, Any]:
        bare = BareSystem("bare", self.children)
        bare.start()
        try:
            bare.wait_ready()
            measured = {
                kind: self.measure(bare, kind, 0, self.options.duration).as_dict()
                for kind in ("sequential", "concurrent")
            }
        finally:
            bare.stop()
        self.measurements = [m for m in self.measurements if m.system != "bare"]
        return measured

    # -- the run --------------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        options = self.options
        options.out.mkdir(parents=True, exist_ok=True)
        bench = derive(options.blueprint, options.endpoint, self.work / "derived.yaml")
        bench, twin = colocated(bench, options.colocate, self.work / "bench.yaml")
        load_before = _loadavg()
        started = time.time()
        chain = " -> ".join(s.label for s in bench.loaded.itinerary(bench.endpoint))
        print(f"backworks bench: {bench.stages} stages ({chain})", flush=True)
        url = self.start_broker(bench.loaded.model.nats.storage)
        self.loadgen = LoadGenerator(self.children)
        print("load generator ceiling (bare endpoint):", flush=True)
        ceiling = self.loadgen_ceiling()

        pipeline = PipelineSystem("pipeline", self.children, bench=bench, nats=url)
        self.trust(bench)
        pipeline.start()
        pipeline.wait_ready()
        assert self.nats is not None
        sizes, response_size = asyncio.run(hop_sizes(url, pipeline, bench, self.nats.auth(ADMIN)))
        floor_system = FloorSystem("floor", self.children, nats=url, sizes=sizes, response_size=response_size)
        floor_system.full_path, floor_system.single_path = pipeline.full_path, pipeline.single_path
        in_process = InProcessSystem("in-process", self.children, bench=bench)
        co_located = PipelineSystem("co-located", self.children, bench=twin, nats=url)
        floor_system.start()
        in_process.start()
        co_located.start()
        floor_system.wait_ready()
        in_process.wait_ready()
        co_located.wait_ready()
        systems: list[System] = [pipeline, floor_system, in_process, co_located]
        print(f"measuring {len(systems)} systems x {len(KINDS)} loads x {options.rounds} rounds:", flush=True)
        for round_ in range(1, options.rounds + 1):
            order = systems[(round_ - 1) % len(systems) :] + systems[: (round_ - 1) % len(systems)]
            for kind in KINDS:
                for system in order:
                    self.measure(system, kind, round_, options.duration)
        open_loop = self.open_loop(systems) if options.open_loop else None
        processes = {s.name: [c.label for c in s.processes] for s in systems}
        for system in systems:
            system.stop()

        scaleout = self.scaleout(url, options.scale_blueprint) if options.scale else None
        scaleout_cpu = self.scaleout(url, options.cpu_scale_blueprint) if options.scale and options.scale_cpu else None
        self.results = report.assemble(
            options=options,
            bench=bench,
            started=started,
            load_before=load_before,
            load_after=_loadavg(),
            nats_version=nats_server_version(),
            ceiling=ceiling,
            hop_sizes=sizes,
            response_size=response_size,
            processes=processes,
            colocated=twin,
            measurements=self.measurements,
            scaleout=scaleout,
        )
        self.results["scaleout_cpu"] = scaleout_cpu
        self.results["open_loop"] = open_loop
        return self.results

    def open_loop(self, systems: list[System]) -> dict[str, Any]:
        """Per system, the highest fixed arrival rate sustained with p99 under the bound (``ratesearch``)."""
        options = self.options
        assert self.loadgen is not None
        loadgen = self.loadgen
        print(f"open loop: highest rate with p99 <= {options.open_loop_p99_ms:g} ms per system", flush=True)
        found: dict[str, Any] = {}
        for system in systems:
            closed = [m for m in self.measurements if m.system == system.name and m.kind == "concurrent"]
            throughput = sum(m.completed for m in closed) / max(1e-9, sum(m.seconds for m in closed)) if closed else 0

            def measure(rate: float, system: System = system) -> dict[str, Any]:
                system.check()
                point = loadgen.run_open(system.port, system.full_path, rate, options.open_loop_duration,
                                         options.warmup, options.open_loop_connections)  # fmt: skip
                if "fatal" in point:
                    raise RuntimeError(f"load generator: {point['fatal']}")
                print(
                    f"  open loop {system.name:<10} {rate:8.0f} req/s due  {point['achieved']:8.1f} answered/s  "
                    f"p50 {point['p50']:8.3f} ms  p99 {point['p99']:8.3f} ms  failed {point['failed']}",
                    flush=True,
                )
                return point

            start = max(ratesearch.MIN_RATE, throughput * ratesearch.DEFAULT_START_SHARE)
            found[system.name] = ratesearch.search(measure, start, options.open_loop_p99_ms,
                                                   max_steps=options.open_loop_steps)  # fmt: skip
        return found

    def scaleout(self, url: str, blueprint: Path) -> dict[str, Any]:
        options = self.options
        bench = derive(blueprint, None, self.work / blueprint.name)
        if options.slow_stage not in bench.instances():
            raise SystemExit(f"{blueprint}: no stage {options.slow_stage!r} in the measured endpoint")
        pipeline = PipelineSystem(
            "scale-out", self.children, bench=bench, nats=url, inflight={options.slow_stage: options.slow_inflight}
        )
        self.trust(bench)
        pipeline.single_path = ""
        points: list[dict[str, Any]] = []
        print(
            f"scale-out: {options.slow_stage} x {options.scale} replicas, {options.concurrency} in flight", flush=True
        )
        try:
            pipeline.start()
            pipeline.wait_ready()
            for replicas in options.scale:
                pipeline.scale(options.slow_stage, replicas)
                pipeline.wait_ready()
                measurement = self.measure(pipeline, "concurrent", replicas, options.scale_duration)
                points.append({"replicas": replicas, **measurement.as_dict()})
        finally:
            pipeline.stop()
        self.measurements = [m for m in self.measurements if m.system != "scale-out"]
        stages = [s.label for s in bench.loaded.itinerary(bench.endpoint)]
        return {
            "blueprint": report.relative(blueprint),
            "stages": stages,
            "slow_stage": options.slow_stage,
            "slow_stage_delay_ms": bench.loaded.instances[options.slow_stage].config.model_dump().get("ms"),
            "cpu_bound": bool(bench.loaded.instances[options.slow_stage].config.model_dump().get("cpu_bound")),
            "cpus": os.cpu_count(),
            "slow_inflight_per_replica": options.slow_inflight,
            "concurrency": options.concurrency,
            "points": points,
        }


async def declare(url: str, storage: str, auth: NatsAuth) -> None:
    """Backworks' streams and buckets, and the floor's stream with the same storage and de-duplication."""
    client = await broker.connect([url], name="bench-declare", auth=auth)
    try:
        js = broker.jetstream(client)
        await broker.declare(js, storage=storage)
        pipeline = await js.stream_info(PIPELINE_STREAM)
        await js.add_stream(
            StreamConfig(
                name=floor.STREAM,
                subjects=[floor.SUBJECTS],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=pipeline.config.storage,
                duplicate_window=pipeline.config.duplicate_window,
                max_age=pipeline.config.max_age,
                discard=DiscardPolicy.OLD,
            )
        )
    finally:
        await client.drain()


async def hop_sizes(
    url: str, pipeline: PipelineSystem, bench: Bench, auth: NatsAuth
) -> tuple[dict[str, list[int]], int]:
    """Bytes of every message one request puts on the broker, per chain, observed on the real pipeline."""
    client = await nats.connect([url], name="bench-sizes", **auth.options())
    seen: list[int] = []

    async def record(msg: Any) -> None:
        seen.append(len(msg.data))

    subscriptions = [
        await client.subscribe("bw.stage.>", cb=record),
        await client.subscribe(f"{INBOX_PREFIX}.>", cb=record),
    ]
    await client.flush()  # the server has both subscriptions before the first request (else it may miss a hop)
    sizes: dict[str, list[int]] = {}
    response_size = 0
    expected = {"full": bench.stages + 1, "single": len(bench.loaded.itinerary(bench.single)) + 1}
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            for chain, path in (("full", pipeline.full_path), ("single", pipeline.single_path)):
                seen.clear()
                response = await http.get(pipeline.base + path)
                response.raise_for_status()
                await client.flush()
                deadline = time.monotonic() + 5.0
                while len(seen) < expected[chain] and time.monotonic() < deadline:  # noqa: ASYNC110  # counts, not an event
                    await asyncio.sleep(0.01)
                if len(seen) != expected[chain]:
                    raise RuntimeError(f"expected {expected[chain]} messages on the {chain} chain, saw {len(seen)}")
                sizes[chain] = list(seen)
                if chain == "full":
                    response_size = len(response.content)
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()
        await client.drain()
    return sizes, response_size


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def nats_server_version() -> str:
    try:
        found = subprocess.run([str(find_binary()), "--version"], capture_output=True, text=True, timeout=5)
        return found.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    logs.configure("bench", fmt="console", level="error")
    run = Run(options)
    try:
        results = run.execute()
    finally:
        run.close()
    pids = [*run.children.pids, *([run.nats_child.pid] if run.nats_child else [])]
    results["pids"] = pids
    report.write(results, options.out)
    return 0
