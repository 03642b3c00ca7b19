"""The ``backworks`` command line.

Commands stay thin: parse options, call the module that does the work, print the result (data on stdout,
diagnostics on stderr). Everything heavy (pydantic models, nats-py, the web stack) is imported inside the
command that needs it, so ``backworks --help`` starts quickly.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backworks import __version__
from backworks.audit_commands import audit_app
from backworks.console import (
    DEFAULT_METRICS_HOST,
    BlueprintArg,
    Format,
    FormatOption,
    MetricsHostOption,
    MetricsPortOption,
    NatsOption,
    console,
    fail,
)
from backworks.dlq_commands import dlq_app
from backworks.keys_commands import keys_app
from backworks.nats_commands import declare_streams, nats_app, print_permissions
from backworks.plugin_commands import register as register_plugin_commands
from backworks.revision_commands import register as register_revision_commands
from backworks.revision_commands import store_starting_revision
from backworks.shadow_commands import register as register_shadow_commands
from backworks.split_commands import split_app
from backworks.tap_commands import analytics_app
from backworks.tap_commands import report as report_command
from backworks.top_commands import top as top_command

if TYPE_CHECKING:
    from collections.abc import Iterable

    from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance

app = typer.Typer(
    help="Backworks: an API declared in a YAML blueprint, extended by plugins running as NATS JetStream services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
LOOPBACK = "127.0.0.1"
ADMIT_TIMEOUT = 10.0
"""Seconds a hand-run service waits for the embedded broker to reload with its identity."""


def configure_logs(service: str) -> None:
    from backworks.pipeline import logs

    logs.configure(service)


def load_or_exit(path: Path) -> LoadedBlueprint:
    """The validated blueprint, or its problems on stderr and exit code 2."""
    from backworks.contracts.errors import BlueprintError
    from backworks.pipeline import blueprints
    from backworks.pipeline.errors import PipelineError

    try:
        return blueprints.load(path)
    except BlueprintError as exc:
        console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(2) from None
    except PipelineError as exc:
        raise fail(str(exc), 2) from None


def resolve_servers(loaded: LoadedBlueprint, given: str | None) -> list[str]:
    from backworks.local.servers import resolve

    found = resolve(given, loaded.model.nats.url)
    if not found:
        raise fail(
            "the blueprint uses the embedded broker but none is running here: start one with `backworks nats` "
            "(or use `backworks up`), or pass --nats URL"
        )
    return found


def admit_services(loaded: LoadedBlueprint, servers: list[str], identity: str) -> None:
    """On the embedded broker of this state directory, make sure the blueprint's identities are trusted.

    A hand-run service (``backworks gateway``/``serve`` next to ``backworks nats``) adds its blueprint's
    identities to the keyring, which makes the running broker reload; this waits until ``identity`` is let in. A
    blueprint meant for the embedded broker first waits for it to be recorded here (it may still be starting).
    """
    from backworks.local.embedded import wait_accepted, wait_governed
    from backworks.pipeline import nats_auth
    from backworks.pipeline.permissions import identities, widened

    keyring = nats_auth.keyring()
    if loaded.model.nats.embedded:
        wait_governed(keyring, servers, ADMIT_TIMEOUT)
    if not keyring.governs(servers):
        return
    # Wait even when nothing changed here: another service may have just admitted them, its reload still on the way.
    recorded = keyring.entries()
    keyring.admit(widened(identity, recorded.get(identity.name)) for identity in identities(loaded).values())
    try:
        wait_accepted(servers[0], nats_auth.resolve(identity, servers, loaded.model.nats), ADMIT_TIMEOUT)
    except Exception as exc:
        raise fail(f"the embedded broker did not take the blueprint's identities: {exc}") from None


def refuse_pinned_out(instances: Iterable[ResolvedInstance]) -> None:
    """Exit (code 2) when this environment's plugin version is outside an instance's ``version`` pin."""
    from backworks.pipeline import pins

    try:
        for instance in instances:
            pins.check(instance)
    except pins.VersionRefused as exc:
        raise fail(str(exc), 2) from None


def running_revision(loaded: LoadedBlueprint, servers: list[str], identity: str) -> tuple[LoadedBlueprint, int | None]:
    """The blueprint a starting service runs: the current revision in ``bw_config`` if one is stored (the file
    otherwise), and its number."""
    import asyncio

    from backworks.contracts.errors import BlueprintError
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.revisions import running

    try:
        return asyncio.run(running(servers, identity, loaded.model.nats, loaded))
    except BlueprintError as exc:
        raise fail(f"the running blueprint revision cannot be loaded here:\n{exc}") from None
    except PipelineError as exc:
        raise fail(str(exc)) from None


@app.callback()
def main_options(
    log_format: Annotated[
        str | None, typer.Option(help="Log format: json, console or auto (json when not a TTY).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level: debug, info, warning, error.")] = None,
) -> None:
    """Options shared by every command (children started by `up` inherit them)."""
    # The variable names are pipeline.logs.LOG_FORMAT_ENV/LOG_LEVEL_ENV, spelled out to keep --help light.
    if log_format:
        os.environ["BACKWORKS_LOG_FORMAT"] = log_format
    if log_level:
        os.environ["BACKWORKS_LOG_LEVEL"] = log_level


@app.command()
def version(format: FormatOption = Format.TEXT) -> None:
    """Print the Backworks version."""
    print(json.dumps({"version": __version__}) if format is Format.JSON else __version__)


def validate_or_exit(blueprint: Path, format: Format) -> LoadedBlueprint:
    """The validated blueprint, or every problem on stdout (as ``validate`` prints them) and exit code 1."""
    from backworks.contracts.errors import BlueprintError
    from backworks.pipeline import blueprints

    try:
        return blueprints.load(blueprint)
    except BlueprintError as exc:
        if format is Format.JSON:
            print(json.dumps({"valid": False, "errors": [issue.as_dict() for issue in exc.issues]}, indent=2))
        else:
            print(str(exc))
        raise typer.Exit(1) from None


@app.command()
def validate(blueprint: BlueprintArg, format: FormatOption = Format.TEXT) -> None:
    """Check a blueprint and every plugin config; report all problems (file, line, JSON pointer, plugin)."""
    loaded = validate_or_exit(blueprint, format)
    if format is Format.JSON:
        print(json.dumps({"valid": True, "errors": []}))
    else:
        endpoints, instances = len(loaded.model.endpoints), len(loaded.instances)
        print(f"{blueprint}: valid ({endpoints} endpoints, {instances} plugin instances)")


def write_document(document: object, out: Path | None) -> None:
    """A generated document as JSON: to ``out`` (saying so on stderr), or to stdout."""
    text = json.dumps(document, indent=2)
    if out:
        out.write_text(text + "\n")
        console.print(f"wrote {out}", highlight=False)
    else:
        print(text)


@app.command()
def asyncapi(
    blueprint: BlueprintArg,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
) -> None:
    """Describe the blueprint's pipeline (stage, event, dead-letter and reply subjects) as AsyncAPI 3 JSON."""
    from backworks.local.asyncapi import build

    write_document(build(load_or_exit(blueprint), __version__), out)


@app.command()
def openapi(
    blueprint: BlueprintArg,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
) -> None:
    """Describe the blueprint's HTTP API (endpoints, typed path parameters, problem responses) as OpenAPI 3.1 JSON."""
    from backworks.gateway.openapi import build

    write_document(build(load_or_exit(blueprint), __version__), out)


@app.command("declare")
def declare_command(blueprint: BlueprintArg, nats: NatsOption = None, format: FormatOption = Format.TEXT) -> None:
    """Create or update Backworks' streams and KV buckets on a broker (run once per deployment), then print the
    permissions each service's NATS user needs (on the embedded broker they are applied at once)."""
    import asyncio

    from backworks.pipeline.errors import PipelineError

    configure_logs("declare")
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    try:
        model = loaded.model
        asyncio.run(declare_streams(servers, model.nats.storage, model.nats.replicas, model.nats, model.events))
        revision, stored = asyncio.run(store_starting_revision(servers, loaded, f"backworks declare {blueprint}"))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    admit_services(loaded, servers, "gateway")
    console.print(f"streams and buckets declared on {', '.join(servers)}", highlight=False)
    said = "stored as" if stored else "already the running"
    console.print(f"blueprint {said} revision {revision.number}", highlight=False)
    print_permissions(loaded, format)


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

    configure_logs("gateway")
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    admit_services(loaded, servers, "gateway")
    loaded, revision = running_revision(loaded, servers, "gateway")
    settings = loaded.model.gateway
    run(loaded, servers, host or settings.host, settings.port if port is None else port, access_log=access_log,
        revision=revision)  # fmt: skip


@app.command()
def serve(
    instance: Annotated[
        str,
        typer.Argument(
            help="Plugin instance name (or `<endpoint>-handler`), or a co-location group (`colocate:`) to run all "
            "its instances in this process.",
            show_default=False,
        ),
    ],
    blueprint: BlueprintArg,
    nats: NatsOption = None,
    max_inflight: Annotated[
        int | None, typer.Option(help="Messages this replica works on at once. Default: limits.max_concurrent or 64.")
    ] = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
) -> None:
    """Run one replica of one plugin instance (or of a co-location group) as JetStream pull consumers (start more
    to scale)."""
    import asyncio

    import structlog
    import uvloop

    from backworks.pipeline import limits
    from backworks.pipeline.colocation import members_of, serve_group
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.permissions import group_identity, stage_identity
    from backworks.pipeline.stagehost import serve as serve_stage

    configure_logs(f"serve:{instance}")
    loaded = load_or_exit(blueprint)
    in_file = members_of(loaded, instance) or ([loaded.instances[instance]] if instance in loaded.instances else [])
    refuse_pinned_out(in_file)  # before connecting: a replica of the wrong plugin version exits at once
    servers = resolve_servers(loaded, nats)
    identity = group_identity(instance) if members_of(loaded, instance) else stage_identity(instance)
    admit_services(loaded, servers, identity)
    loaded, revision = running_revision(loaded, servers, identity)
    members = members_of(loaded, instance)
    if instance not in loaded.instances and not members:
        groups = sorted(loaded.model.groups())
        known = ", ".join(sorted(loaded.instances)) + (f"; co-location groups: {', '.join(groups)}" if groups else "")
        where = f"revision {revision} of the running blueprint" if revision is not None else str(blueprint)
        raise fail(f"no plugin instance or co-location group {instance!r} in {where}; instances: {known}")
    if members and metrics_port is not None:
        raise fail(f"--metrics-port: a co-location group ({instance}) serves no metrics port; its members' hook "
                   "times are in the gateway's /_backworks/metrics", 2)  # fmt: skip
    served = members or [loaded.instances[instance]]
    refuse_pinned_out(served)
    applied = limits.apply(served[0].spec.limits)  # a group's members agree on them (``blueprints._check_groups``)
    if applied:
        structlog.get_logger("backworks.limits").info("resource limits applied", instance=instance, **applied)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        watchdog = limits.LoopWatchdog(stall_after=max(item.timeout for item in served) * 10)
        watchdog.start()
        try:
            breakers = {name: item.spec.breaker for name, item in loaded.instances.items()}
            settings = loaded.model.nats
            if members:
                return await serve_group(
                    instance, members, servers, stop, settings, max_inflight=max_inflight, breaker_settings=breakers,
                    revision=revision,
                )  # fmt: skip
            return await serve_stage(
                served[0],
                servers,
                stop,
                settings,
                max_inflight=max_inflight,
                breaker_settings=breakers,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                revision=revision,
            )
        finally:
            watchdog.stop()

    try:
        code = uvloop.run(main())
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if code:
        raise typer.Exit(code)


def parse_replicas(values: list[str], loaded: LoadedBlueprint) -> dict[str, int]:
    """Replicas per instance: the blueprint's, then ``INSTANCE=N`` or ``GROUP=N`` (every member of the group)."""
    counts = {name: item.spec.replicas for name, item in loaded.instances.items()}
    groups = loaded.model.groups()
    for value in values:
        name, _, number = value.partition("=")
        if (name not in counts and name not in groups) or not number.isdigit() or int(number) < 1:
            raise fail(f"--replicas expects INSTANCE=N or GROUP=N with a known name and N >= 1, got {value!r}")
        for member in groups.get(name, [name]):
            counts[member] = int(number)
    return counts


@app.command()
def up(
    blueprint: BlueprintArg,
    port: Annotated[int | None, typer.Option(help="HTTP port. Default: the blueprint's gateway.port.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind. Default: the blueprint's gateway.host.")] = None,
    nats: NatsOption = None,
    replicas: Annotated[
        list[str] | None,
        typer.Option(
            help="INSTANCE=N: replicas of one plugin instance; GROUP=N: of one co-location group (repeatable)."
        ),
    ] = None,
    nats_port: Annotated[int, typer.Option(help="Port of the embedded NATS; 0 picks a free one.")] = 0,
    metrics_ports: Annotated[
        bool,
        typer.Option(
            "--metrics-ports",
            help="Give each plugin replica a free 127.0.0.1 port for its Prometheus metrics (shown in the table).",
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Apply the blueprint file (as `backworks apply` does) when it changes.")
    ] = False,
) -> None:
    """Run everything: the embedded NATS, the gateway and one process per plugin replica (per co-location group
    replica for co-located instances), supervised."""
    from backworks.local import up as orchestration
    from backworks.local.errors import LocalError

    configure_logs("up")
    loaded = load_or_exit(blueprint)
    refuse_pinned_out(loaded.instances.values())  # up's replicas run this environment's plugins
    counts = parse_replicas(replicas or [], loaded)
    external = resolve_servers(loaded, nats) if nats or not loaded.model.nats.embedded else None
    try:
        plan = orchestration.plan(loaded, str(blueprint), external, host, port, nats_port, counts, metrics_ports)
        orchestration.trust(loaded, plan)
        orchestration.run(plan, loaded.model.nats, console.rich, loaded.model.events, loaded, watch)
    except LocalError as exc:
        raise fail(str(exc)) from None


@app.command()
def scale(
    counts: Annotated[list[str], typer.Argument(help="INSTANCE=N: run N replicas of a plugin instance (N >= 0).")],
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="State directory of the running `backworks up`. Default: $BACKWORKS_STATE_DIR or ./.backworks."
        ),
    ] = None,
) -> None:
    """Change the number of replicas a running `backworks up` runs; stopped replicas drain their work first."""
    from backworks.local import scaling
    from backworks.local.state import state_path

    try:
        applied = scaling.request((state_dir or state_path()).resolve(), counts)
    except scaling.ScaleError as exc:
        raise fail(str(exc)) from None
    for name, count in sorted(applied.items()):
        typer.echo(f"{name}: {count} replica{'s' if count != 1 else ''}")


app.add_typer(dlq_app, name="dlq")
app.add_typer(audit_app, name="audit")
app.add_typer(analytics_app, name="analytics")
app.command("report")(report_command)
app.command("top")(top_command)
app.add_typer(nats_app, name="nats")
app.add_typer(keys_app, name="keys")
app.add_typer(split_app, name="split")


register_plugin_commands(app)
register_shadow_commands(app)
register_revision_commands(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
