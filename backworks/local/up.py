"""``backworks up``: the embedded broker, the gateway, one process per plugin replica and the blueprint's extra
``processes``, started and supervised.

The CLI command only parses options; this module checks the ports, starts the children through the
``Supervisor``, waits for the streams and the stages, prints what runs, and stops everything on the way out.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from rich.console import Console
from rich.table import Table

from backworks.contracts.blueprint import EventSettings, NatsSettings
from backworks.local import scaling
from backworks.local.errors import NotReady
from backworks.local.fleet import FleetFollower, Start, watch_and_apply
from backworks.local.ports import LOOPBACK, accepts, ensure_free, free_port
from backworks.local.servers import address
from backworks.local.state import STATE_DIR_ENV, state_dir
from backworks.local.streams import STREAMS
from backworks.local.supervisor import Child, Supervisor, wait_until_ready
from backworks.pipeline import broker, nats_auth
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.errors import PipelineError
from backworks.pipeline.permissions import identities

READY_TIMEOUT = 60.0
STREAMS_TIMEOUT = 30.0
PYTHON = "python"
"""A ``processes`` command's program that means "the interpreter running Backworks"."""


@dataclass(frozen=True)
class Plan:
    """What ``up`` runs: where the gateway listens, which broker, how many replicas of each instance."""

    blueprint: str
    host: str
    port: int
    servers: list[str]
    replicas: dict[str, int]
    """Live replicas expected per instance (a co-located instance: its group's)."""
    nats_port: int | None
    """Port of the embedded broker to start, ``None`` when the servers are external."""
    storage: str
    extras: dict[str, list[str]] = field(default_factory=dict)
    """The blueprint's ``processes``: name -> command (``python`` already replaced by this interpreter)."""
    folder: Path | None = None
    """The blueprint's folder: where the extra processes run."""
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """``up --metrics-ports``: the Prometheus port of each stage replica, by its child's name."""
    groups: dict[str, list[str]] = field(default_factory=dict)
    """Co-location groups: name -> member instances, served by one process per group replica."""

    @property
    def url(self) -> str:
        return ",".join(self.servers)


def plan(
    loaded: LoadedBlueprint,
    path: str,
    servers: list[str] | None,
    host: str | None,
    port: int | None,
    nats_port: int,
    replicas: dict[str, int],
    metrics_ports: bool = False,
) -> Plan:
    """Decide the ports and the broker; raise ``PortInUse`` for a port that is taken, before anything starts.

    ``metrics_ports``: give every stage replica a free loopback port for its Prometheus metrics.
    """
    settings = loaded.model.gateway
    bind = host or settings.host
    http_port = settings.port if port is None else port
    if http_port == 0:
        http_port = free_port(bind)
    else:
        ensure_free(bind, http_port, "--port")
    embedded_port: int | None = None
    if servers is None:
        if nats_port:
            ensure_free(LOOPBACK, nats_port, "--nats-port")
        embedded_port = nats_port or free_port()
        servers = [f"nats://{LOOPBACK}:{embedded_port}"]
    extras = {name: _command(spec.command) for name, spec in loaded.model.processes.items()}
    groups = loaded.model.groups()
    replicas = dict(replicas)
    for members in groups.values():
        # A group runs as many replicas as its most replicated member asks for (each replica serves every member).
        count = max(replicas.get(member, 1) for member in members)
        replicas.update(dict.fromkeys(members, count))
    ports = {}
    if metrics_ports:
        # Co-location groups serve no metrics port of their own yet (``serve GROUP`` refuses ``--metrics-port``).
        ports = {replica_name(name, i, count): free_port() for name, count in served(replicas, groups).items()
                 if name not in groups for i in range(count)}  # fmt: skip
    return Plan(
        path, bind, http_port, servers, replicas, embedded_port, loaded.model.nats.storage, extras, loaded.path.parent,
        ports, groups,
    )  # fmt: skip


def served(replicas: dict[str, int], groups: dict[str, list[str]]) -> dict[str, int]:
    """Processes to run: name -> replicas, a co-location group counted once under its own name."""
    grouped = {member for members in groups.values() for member in members}
    processes = {name: count for name, count in replicas.items() if name not in grouped}
    processes.update({group: replicas[members[0]] for group, members in groups.items()})
    return processes


def replica_name(instance: str, index: int, count: int) -> str:
    """The child name of replica ``index`` (from 0) of ``instance`` (or group), as ``up``'s table shows it."""
    return f"serve {instance}" + (f" #{index + 1}" if count > 1 else "")


def _command(command: list[str]) -> list[str]:
    """``command`` with a leading ``python`` replaced by the interpreter running Backworks (its venv's packages)."""
    program, *args = command
    return [sys.executable, *args] if program == PYTHON else command


def children(plan: Plan) -> tuple[Child | None, list[Child]]:
    """The broker child (if embedded) and the services, each the CLI command a user would type."""
    broker_child = None
    if plan.nats_port is not None:
        broker_child = Child("nats", ["nats", "--port", str(plan.nats_port), "--storage", plan.storage])
    services = [Child(f"process {name}", command, program=[], cwd=plan.folder) for name, command in plan.extras.items()]
    services += [
        Child("gateway", ["gateway", plan.blueprint, "--nats", plan.url, "--port", str(plan.port), "--host", plan.host])
    ]
    for name, count in served(plan.replicas, plan.groups).items():
        services += [replica(plan, name, index, numbered=count > 1) for index in range(count)]
    return broker_child, services


def replica(plan: Plan, instance: str, index: int, numbered: bool = True) -> Child:
    """The child for replica ``index`` (0-based) of ``instance``: ``backworks serve INSTANCE BLUEPRINT``."""
    label = f"serve {instance}" + (f" #{index + 1}" if numbered else "")
    args = ["serve", instance, plan.blueprint, "--nats", plan.url]
    if label in plan.metrics_ports:
        args += ["--metrics-port", str(plan.metrics_ports[label])]
    return Child(label, args, instance=instance)


def trust(loaded: LoadedBlueprint, plan: Plan) -> None:
    """With the embedded broker: the deployment's identities, exactly this blueprint's (keys generated on first
    start, kept after); the broker started next trusts them and nobody else."""
    if plan.nats_port is not None:
        nats_auth.keyring().admit(identities(loaded).values(), replace=True)


def run(
    plan: Plan,
    nats: NatsSettings,
    console: Console,
    events: EventSettings | None = None,
    loaded: LoadedBlueprint | None = None,
    watch: bool = False,
) -> None:
    """Start everything, wait until it is ready, supervise until a signal; always stop every child.

    With ``loaded``, the blueprint becomes the current revision in ``bw_config`` before the services start, and
    later revisions (``backworks apply``) start and stop replicas; ``watch`` applies the file when it changes.
    """
    follower: FleetFollower | None = None
    # Children inherit the state directory as an absolute path: extra processes run in the blueprint's folder
    # and must find the same files (e.g. a database a handler module keeps there).
    os.environ[STATE_DIR_ENV] = str(state_dir())
    broker_child, services = children(plan)
    supervisor = Supervisor(broker_child, services, lambda name, index: replica(plan, name, index))
    supervisor.install_signal_handlers()
    try:
        with console.status("starting NATS") as status:
            if broker_child:
                broker_child.start()
            if not wait_for_streams(plan.servers, supervisor, status.update, nats, events or EventSettings()):
                if supervisor.stopping:
                    return
                raise NotReady("NATS did not come up; see .backworks/nats-server.log")
            revision = store_revision(plan, loaded, nats) if loaded is not None else None
            status.update("starting the gateway and plugin services")
            supervisor.start_services()
            local = LOOPBACK if plan.host in ("0.0.0.0", "::") else plan.host
            health = f"http://{local}:{plan.port}/_backworks/health"
            ready = wait_until_ready(health, plan.replicas, READY_TIMEOUT, supervisor, status.update)
        if supervisor.stopping:
            return
        print_ready(console, supervisor, ready, f"http://{plan.host}:{plan.port}", plan.url, plan.metrics_ports)
        scale = scaling.listen(state_dir(), supervisor)
        if loaded is None:
            supervisor.run(scale)
            return
        follower = FleetFollower(plan.servers, nats, revision)
        follower.start()
        file_watch = watch_and_apply(Path(plan.blueprint), follower, console.print) if watch else None

        def tick() -> None:
            assert follower is not None
            scale()
            follow_revisions(plan, supervisor, follower, console)
            if file_watch is not None:
                file_watch.tick()

        supervisor.run(tick)
    finally:
        console.print("stopping…", highlight=False)
        scaling.withdraw(state_dir())
        if follower is not None:
            follower.stop()
        supervisor.stop()
        console.print("stopped", highlight=False)


def store_revision(plan: Plan, loaded: LoadedBlueprint, nats: NatsSettings) -> int:
    """The blueprint ``up`` starts with becomes the current revision (a new one only if it differs)."""
    from backworks.revision_commands import store_starting_revision

    revision, _ = asyncio.run(store_starting_revision(plan.servers, loaded, f"backworks up {plan.blueprint}"))
    return revision.number


def follow_revisions(plan: Plan, supervisor: Supervisor, follower: FleetFollower, console: Console) -> None:
    """Start the replicas of instances a revision added, stop those of drained removed ones."""
    while True:
        try:
            action = follower.actions.get_nowait()
        except queue.Empty:
            return
        running = supervisor.replica_counts().get(action.instance, 0)
        if isinstance(action, Start):
            console.print(f"revision starts {action.replicas} replica(s) of {action.instance}", highlight=False)
            supervisor.set_replicas(action.instance, running + action.replicas)
        else:
            leaving = running if action.count is None else min(action.count, running)
            supervisor.set_replicas(action.instance, running - leaving)  # they drain, then exit
            console.print(f"revision stops {leaving} replica(s) of {action.instance}", highlight=False)


def wait_for_streams(
    servers: list[str], supervisor: Supervisor, progress: Any, nats: NatsSettings, events: EventSettings
) -> bool:
    """Wait until the broker accepts connections and Backworks' streams exist (declaring them if external)."""

    async def probe() -> bool:
        from backworks.pipeline.errors import BrokerUnavailable

        if not any(accepts(*address(server)) for server in servers):
            raise BrokerUnavailable("not accepting connections yet")
        client = await broker.connect(servers, name="backworks-up", settings=nats)
        try:
            js = broker.jetstream(client)
            if supervisor.broker is None:
                await broker.declare(js, storage=nats.storage, replicas=nats.replicas)
            await declared(js)
            await broker.apply_event_limits(js, events.max_age_s, events.max_bytes)
            return True
        finally:
            await client.drain()

    deadline = time.monotonic() + STREAMS_TIMEOUT
    while time.monotonic() < deadline and not supervisor.stopping:
        supervisor.check()
        try:
            return asyncio.run(probe())
        except PipelineError:
            progress("waiting for NATS")
            time.sleep(0.2)
    return False


async def declared(js: JetStreamContext, timeout: float = 5.0) -> None:
    """Wait until every stream and KV bucket of Backworks exists; ``BrokerUnavailable`` after ``timeout`` each.

    The embedded broker declares them one after the other, the buckets last: ``up`` stores its starting revision
    in ``bw_config`` next, and the services open the other buckets as they start.
    """
    for name in STREAMS:
        await broker.attach(js, name, timeout=timeout)


def print_ready(
    console: Console,
    supervisor: Supervisor,
    ready: dict[str, Any] | None,
    url: str,
    nats_url: str,
    metrics_ports: dict[str, int] | None = None,
) -> None:
    table = Table(title="backworks up", title_justify="left")
    table.add_column("process")
    table.add_column("pid", justify="right")
    table.add_column("state")
    if metrics_ports:
        table.add_column("metrics", overflow="fold")  # whole URLs, even in a narrow terminal
    for child in supervisor.children:
        row = [child.name, str(child.pid), "[green]running[/]" if child.alive else "[red]down[/]"]
        if metrics_ports:
            port = metrics_ports.get(child.name)
            gateway_metrics = f"{url}/_backworks/metrics" if child.name == "gateway" else ""
            row.append(f"http://{LOOPBACK}:{port}/metrics" if port else gateway_metrics)
        table.add_row(*row)
    console.print(table)
    if ready is None:
        console.print("[yellow]not every stage reported live in time; see the logs above[/]")
    else:
        console.print(f"health: {ready.get('status')}", highlight=False)
    console.print(f"NATS: {nats_url}", highlight=False)
    console.print(f"[bold green]Backworks is up:[/] {url}   (Ctrl-C to stop)", highlight=False)
