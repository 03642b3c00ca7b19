"""``backworks apply``, ``history`` and ``rollback``: the running blueprint's revisions (``bw_config``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backworks.console import Format, FormatOption, LocalNatsOption, NatsOption, fail

if TYPE_CHECKING:
    from backworks.applying import ApplyResult
    from backworks.contracts.revision import Revision
    from backworks.pipeline.blueprints import LoadedBlueprint

MessageOption = Annotated[str, typer.Option("--message", "-m", help="Why: shown by `backworks history`.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the fleet to report the new revision.")
]


async def store_starting_revision(servers: list[str], loaded: LoadedBlueprint, message: str) -> tuple[Revision, bool]:
    """What ``up`` and ``declare`` do: the blueprint they start with becomes the current revision (stored as a new
    one only when it differs from the running one). Returns the current revision and whether it was stored now."""
    from backworks.pipeline import broker
    from backworks.pipeline.revisions import adopt_or_store

    client = await broker.connect(servers, name="backworks-revision", settings=loaded.model.nats)
    try:
        return await adopt_or_store(broker.jetstream(client), loaded, message)
    finally:
        await client.drain()


def print_result(result: ApplyResult, format: Format) -> None:
    if format is Format.JSON:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        if result.diff.empty and result.revision is None and not result.refused:
            print(f"no changes (revision {result.previous} runs this blueprint)")
            return
        print(f"changes against revision {result.previous}:" if result.previous else "changes:")
        for line in result.diff.lines() or ["  (no route or instance changes)"]:
            print(line)
        for line in result.refused:
            print(f"refused: {line}")
        for name, count in result.needs.items():
            print(f"needs {count} replica(s) of {name}: start `backworks serve {name} BLUEPRINT`")
        if result.revision is not None:
            if result.confirmed:
                print(f"revision {result.revision.number} is running ({result.switch_s:.2f} s)")
            else:
                print(f"revision {result.revision.number} stored, but not reported by: {', '.join(result.waiting_for)}")
    if result.refused:
        raise typer.Exit(1)
    if result.revision is not None and not result.confirmed:
        raise typer.Exit(3)


def run_apply(servers: list[str], loaded: LoadedBlueprint, message: str, timeout: float) -> ApplyResult:
    from backworks.applying import apply
    from backworks.contracts.errors import BlueprintError
    from backworks.pipeline.errors import PipelineError

    try:
        return asyncio.run(apply(servers, loaded, message, timeout))
    except BlueprintError as exc:
        raise fail(f"the running revision cannot be loaded here to compare:\n{exc}") from None
    except PipelineError as exc:
        raise fail(str(exc)) from None


def apply_command(
    blueprint: Annotated[Path, typer.Argument(help="Path to the new blueprint YAML file.", show_default=False)],
    nats: NatsOption = None,
    message: MessageOption = "",
    timeout: TimeoutOption = 60.0,
    format: FormatOption = Format.TEXT,
) -> None:
    """Change the running API to BLUEPRINT: validate, diff against the running revision, refuse what the fleet
    cannot run, store it as a new revision and wait until the gateway and the affected stages run it."""
    from backworks.cli import configure_logs, resolve_servers, validate_or_exit

    configure_logs("apply")  # log lines on stderr: stdout carries the result (JSON with --format json)
    loaded = validate_or_exit(blueprint, format)
    print_result(run_apply(resolve_servers(loaded, nats), loaded, message, timeout), format)


def _servers(nats: str | None) -> list[str]:
    from backworks.local.servers import resolve

    found = resolve(nats, "embedded")
    if not found:
        raise fail("no broker: pass --nats URL, or run this where `backworks up`/`backworks nats` runs")
    return found


async def _history(servers: list[str]) -> list[Revision]:
    from backworks.pipeline import broker
    from backworks.pipeline.revisions import RevisionStore

    client = await broker.connect(servers, name="backworks-history")
    try:
        store = await RevisionStore.open(broker.jetstream(client))
        return await store.history()
    finally:
        await client.drain()


def history_command(nats: LocalNatsOption = None, format: FormatOption = Format.TEXT) -> None:
    """List the running blueprint's revisions: number, time, message, changes."""
    from backworks.cli import configure_logs
    from backworks.pipeline.errors import PipelineError

    configure_logs("history")
    try:
        revisions = asyncio.run(_history(_servers(nats)))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if format is Format.JSON:
        rows = [r.model_dump(exclude={"blueprint"}) for r in revisions]
        print(json.dumps(rows, indent=2))
        return
    for r in revisions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        print(f"{r.number:>4}  {when}  {r.summary}" + (f"  — {r.message}" if r.message else ""))


def rollback_command(
    revision: Annotated[int | None, typer.Argument(help="Revision to go back to. Default: the one before.")] = None,
    nats: LocalNatsOption = None,
    message: MessageOption = "",
    timeout: TimeoutOption = 60.0,
    format: FormatOption = Format.TEXT,
) -> None:
    """Apply an earlier revision's blueprint again, as a new revision (history only grows)."""
    from backworks.cli import configure_logs
    from backworks.contracts.errors import BlueprintError
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.revisions import load

    configure_logs("rollback")
    servers = _servers(nats)
    try:
        revisions = {r.number: r for r in asyncio.run(_history(servers))}
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if not revisions:
        raise fail("no revision stored yet: nothing to roll back to")
    newest = max(revisions)
    target = revision if revision is not None else revisions[newest].previous
    if target is None or target not in revisions:
        raise fail(f"no revision {target} to roll back to; stored: {', '.join(map(str, sorted(revisions)))}")
    try:
        loaded = load(revisions[target])
    except BlueprintError as exc:
        raise fail(f"revision {target} cannot be loaded with the plugins installed here:\n{exc}", 2) from None
    print_result(run_apply(servers, loaded, message or f"rollback to revision {target}", timeout), format)


def register(app: typer.Typer) -> None:
    """Add the revision commands to the ``backworks`` CLI."""
    app.command("apply")(apply_command)
    app.command("history")(history_command)
    app.command("rollback")(rollback_command)
