"""The systems under test, each started as real processes on loopback.

- ``PipelineSystem``: ``backworks gateway`` plus one ``backworks serve`` process per stage replica (``co-located``:
  the same chain with its stages in one ``colocate:`` group, served by one process: see ``colocated``);
- ``FloorSystem``: ``ops.bench.floor`` gateway and hops (bare nats-py, same hops and payload sizes);
- ``InProcessSystem``: ``ops.bench.inprocess`` (one Starlette app, the plugin chain as middleware);
- ``BareSystem``: ``ops.bench.bare``, a fixed response, to find the load generator's own ceiling.

Each system serves two paths: the endpoint's full chain, and a handler-only chain under ``/_single`` that
prices one stage (the difference, divided by the extra stages, is the per-stage cost).
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from backworks.contracts.blueprint import handler_instance
from backworks.local.ports import LOOPBACK, free_port
from backworks.pipeline import blueprints
from backworks.pipeline.blueprints import LoadedBlueprint
from ops.bench.floor import SINGLE_PREFIX
from ops.bench.processes import Child, Children, backworks, python_module

READY_TIMEOUT = 60.0
POLL_INTERVAL = 0.1
HEALTH_PATH = "/_backworks/health"
PATH_PARAM = re.compile(r"\{[^}]+\}")
PARAM_VALUE = "bench"
BENCH_QUERY = "api_key=bench-key-0123456789abcdef"
"""Sent with every request: the default bench chain's api-key stage reads the key from the query (other chains
ignore it). A query rather than a header, so the load generator's request line stays one constant string."""


@dataclass(frozen=True)
class Bench:
    """The blueprint the pipeline and the in-process baseline run, with its two measured endpoints."""

    path: Path
    loaded: LoadedBlueprint
    endpoint: str
    single: str

    @property
    def full_path(self) -> str:
        return f"{request_path(self.loaded.model.endpoints[self.endpoint].path)}?{BENCH_QUERY}"

    @property
    def single_path(self) -> str:
        return f"{request_path(self.loaded.model.endpoints[self.single].path)}?{BENCH_QUERY}"

    @property
    def stages(self) -> int:
        """Stages (hops) of the full chain."""
        return len(self.loaded.itinerary(self.endpoint))

    def instances(self) -> list[str]:
        """Plugin instances the two endpoints use, each served by its own process(es)."""
        used: list[str] = []
        for endpoint in (self.endpoint, self.single):
            for stage in self.loaded.itinerary(endpoint):
                if stage.instance not in used:
                    used.append(stage.instance)
        return used


def request_path(template: str) -> str:
    """A concrete path for a route template: every ``{param}`` becomes ``bench``."""
    return PATH_PARAM.sub(PARAM_VALUE, template)


def derive(source: Path, endpoint: str | None, target: Path) -> Bench:
    """Write the blueprint the run uses: ``endpoint`` with its full chain, and a handler-only twin of it."""
    data: dict[str, Any] = yaml.safe_load(source.read_text())
    endpoints: dict[str, Any] = data.get("endpoints") or {}
    name = endpoint or next(iter(endpoints), "")
    if name not in endpoints:
        raise SystemExit(f"{source}: no endpoint {name!r}; endpoints: {', '.join(endpoints) or 'none'}")
    chosen = dict(endpoints[name])
    if "GET" not in [m.upper() for m in chosen.get("methods", ["GET"])]:
        raise SystemExit(f"{source}: endpoint {name!r} must accept GET to be benchmarked")
    defaults = data.setdefault("defaults", {})
    chain: list[str] = []
    for item in [*defaults.get("plugins", []), *chosen.get("plugins", [])]:
        if item not in chain:
            chain.append(item)
    defaults["plugins"] = []
    single = f"{name}-single"
    data["endpoints"] = {
        name: {**chosen, "methods": ["GET"], "plugins": chain},
        single: {**chosen, "methods": ["GET"], "path": SINGLE_PREFIX + chosen["path"], "plugins": []},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# Derived by ops/bench from {source}\n" + yaml.safe_dump(data, sort_keys=False))
    return Bench(target, blueprints.load(target), name, single)


COLOCATED_PREFIX = "co-"
"""Instance and endpoint names of the co-located twin: it runs beside the pipeline on the same broker, so its stages
need their own subjects, durables, registry and breaker keys."""
COLOCATED_PATH = "/co"
"""Path prefix of the twin's endpoints (both gateways load one blueprint, so routes must differ)."""
COLOCATED_GROUP = "cheap"


def colocated(bench: Bench, members: list[str] | None, target: Path) -> tuple[Bench, Bench]:
    """``bench`` and its co-located twin, both in one blueprint written to ``target``.

    The twin is the same chain with the same configs under prefixed names and paths, with ``members`` (default: every
    instance of the measured chain; the handler-only twin's handler stays alone) in one ``colocate:`` group. One
    blueprint for both, because every service admits its blueprint's identities to the run's keyring and both
    gateways connect as ``gateway``: two blueprints would take each other's rights away.
    """
    data: dict[str, Any] = yaml.safe_load(bench.path.read_text())
    chosen = members if members is not None else [s.instance for s in bench.loaded.itinerary(bench.endpoint)]
    unknown = [name for name in chosen if name not in bench.loaded.instances]
    if unknown:
        raise SystemExit(f"--colocate: no instance {', '.join(unknown)}; instances: {', '.join(bench.instances())}")
    prefix = COLOCATED_PREFIX
    originals: dict[str, Any] = data.get("plugins") or {}
    plugins = {prefix + name: copy.deepcopy(spec) for name, spec in originals.items()}
    endpoints: dict[str, Any] = {}
    for name, spec in data["endpoints"].items():
        twin = copy.deepcopy(spec)
        twin.update(path=COLOCATED_PATH + spec["path"], plugins=[prefix + item for item in spec.get("plugins", [])])
        endpoints[prefix + name] = twin
    for name in chosen:
        handler = next((e for e in data["endpoints"] if handler_instance(e) == name), None)
        spec = endpoints[prefix + handler]["handler"] if handler is not None else plugins[prefix + name]
        spec["colocate"] = COLOCATED_GROUP
    data.update(plugins={**originals, **plugins}, endpoints={**data["endpoints"], **endpoints})
    heading = f"# Derived by ops/bench from {bench.path}, with its co-located twin ({prefix}*)\n"
    target.write_text(heading + yaml.safe_dump(data, sort_keys=False))
    loaded = blueprints.load(target)
    return Bench(target, loaded, bench.endpoint, bench.single), Bench(
        target, loaded, prefix + bench.endpoint, prefix + bench.single
    )


def get(url: str, timeout: float = 2.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout)


def wait_until(ready: Any, what: str, timeout: float = READY_TIMEOUT, check: Any = None) -> None:
    """Poll ``ready()`` until true; ``check()`` raises if a process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_INTERVAL)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s")


@dataclass
class System:
    """A started system: its processes (CPU-accounted) and its two request paths."""

    name: str
    children: Children
    port: int = field(default_factory=free_port)
    processes: list[Child] = field(default_factory=list)
    full_path: str = ""
    single_path: str = ""

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def check(self) -> None:
        self.children.check(self.processes)

    def answers(self) -> bool:
        paths = [p for p in (self.full_path, self.single_path) if p]
        return all(get(self.base + path).status_code == 200 for path in paths)

    def wait_ready(self) -> None:
        wait_until(self.answers, self.name, check=self.check)

    def stop(self) -> None:
        self.children.stop(self.processes)
        self.processes = []


@dataclass
class PipelineSystem(System):
    """The Backworks gateway and one process per stage replica."""

    bench: Bench | None = None
    nats: str = ""
    inflight: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        assert self.bench is not None
        self.full_path, self.single_path = self.bench.full_path, self.bench.single_path
        path = str(self.bench.path)
        command = backworks("gateway", path, "--nats", self.nats, "--port", str(self.port), "--host", LOOPBACK)
        self.processes.append(self.children.spawn("gateway", command))
        for service in self.services():
            self.scale(service, max(1, self.replicas.get(service, 1)))

    def services(self) -> list[str]:
        """What ``backworks serve`` runs: each co-location group of the bench's instances, each instance outside one."""
        assert self.bench is not None
        used = self.bench.instances()
        groups = [name for name, members in self.bench.loaded.model.groups().items() if set(members) & set(used)]
        grouped = {member for name in groups for member in self.bench.loaded.model.groups()[name]}
        return [*groups, *(name for name in used if name not in grouped)]

    def scale(self, instance: str, count: int) -> None:
        """Start replicas of ``instance`` (or of a co-location group) until it has ``count``."""
        assert self.bench is not None
        label = f"stage {instance}"
        running = [p for p in self.processes if p.label == label or p.label.startswith(f"{label}#")]
        for index in range(len(running), count):
            options = ["--max-inflight", str(self.inflight[instance])] if instance in self.inflight else []
            command = backworks("serve", instance, str(self.bench.path), "--nats", self.nats, *options)
            self.processes.append(self.children.spawn(label + (f"#{index + 1}" if index else ""), command))
        self.replicas[instance] = count

    def live(self) -> dict[str, int]:
        body = get(self.base + HEALTH_PATH).json()
        counts: dict[str, int] = {}
        for item in body.get("stages", {}).values():
            counts[item["instance"]] = max(counts.get(item["instance"], 0), item["live_replicas"])
        return counts

    def answers(self) -> bool:
        assert self.bench is not None
        live = self.live()
        if any(live.get(name, 0) < self.replicas.get(name, 1) for name in self.bench.instances()):
            return False
        return super().answers()

    def stage_labels(self) -> list[str]:
        return [p.label for p in self.processes if p.label.startswith("stage ")]


@dataclass
class FloorSystem(System):
    """The raw floor: bare ASGI edge and bare nats-py hops with the pipeline's payload sizes."""

    nats: str = ""
    sizes: dict[str, list[int]] = field(default_factory=dict)
    """Per chain (``full``, ``single``): bytes of the first publish, of each hop's output, of the reply."""
    response_size: int = 0

    def start(self) -> None:
        for chain, sizes in self.sizes.items():
            hops = len(sizes) - 1
            for index in range(hops):
                last = ["--last"] if index == hops - 1 else []
                command = python_module(
                    "ops.bench.floor", "stage", "--nats", self.nats, "--chain", chain, "--index", str(index),
                    "--out-size", str(sizes[index + 1]), *last,
                )  # fmt: skip
                self.processes.append(self.children.spawn(f"hop {chain}.{index}", command))
        first = {chain: sizes[0] for chain, sizes in self.sizes.items()}
        command = python_module(
            "ops.bench.floor", "gateway", "--nats", self.nats, "--port", str(self.port),
            "--sizes", json_dumps(first), "--response-size", str(self.response_size),
        )  # fmt: skip
        self.processes.insert(0, self.children.spawn("floor gateway", command))


@dataclass
class InProcessSystem(System):
    """One Starlette process running the same plugins as middleware."""

    bench: Bench | None = None

    def start(self) -> None:
        assert self.bench is not None
        self.full_path, self.single_path = self.bench.full_path, self.bench.single_path
        command = python_module("ops.bench.inprocess", "--blueprint", str(self.bench.path), "--port", str(self.port))
        self.processes.append(self.children.spawn("in-process app", command))


@dataclass
class BareSystem(System):
    """A fixed-response endpoint, to measure the load generator's ceiling."""

    def start(self) -> None:
        self.full_path = "/"
        command = python_module("ops.bench.bare", "--port", str(self.port))
        self.processes.append(self.children.spawn("bare endpoint", command))


def json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
