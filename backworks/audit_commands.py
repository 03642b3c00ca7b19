"""``backworks audit``: the hash-chained audit store of every event (serve, verify, query)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from backworks.console import (
    DEFAULT_METRICS_HOST,
    BlueprintArg,
    Format,
    FormatOption,
    MetricsHostOption,
    MetricsPortOption,
    NatsOption,
    fail,
    output,
)

audit_app = typer.Typer(help="The audit trail: every event of BW_EVENTS, hash-chained in SQLite.", no_args_is_help=True)


@audit_app.command("serve")
def serve(
    blueprint: BlueprintArg,
    nats: NatsOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
) -> None:
    """Append every event to the audit store (`audit.store`), from the stream's first event, until stopped."""
    from backworks.subscribers import run_subscriber
    from backworks.tap import audit

    run_subscriber("audit", blueprint, nats, audit.serve, metrics_port, metrics_host)


@audit_app.command("verify")
def verify(blueprint: BlueprintArg, format: FormatOption = Format.TEXT) -> None:
    """Check the whole hash chain; names the first broken record and exits 1 if there is one."""
    from backworks.cli import load_or_exit
    from backworks.tap.audit import store_path
    from backworks.tap.auditstore import AuditStore

    path = store_path(load_or_exit(blueprint))
    if not path.exists():
        raise fail(f"no audit store at {path}: run `backworks audit serve {blueprint}` first")
    store = AuditStore(path)
    try:
        checked, broken = store.verify()
        total = store.count()
    finally:
        store.close()
    if format is Format.JSON:
        found = None if broken is None else {"seq": broken.seq, "event_id": broken.event_id, "reason": broken.reason}
        print(json.dumps({"store": str(path), "records": total, "verified": checked, "broken": found}))
    elif broken is None:
        output().print(f"chain intact: {checked} record(s) verified in {path}", highlight=False)
    else:
        output().print(
            f"chain broken at record {broken.seq} (event {broken.event_id}): {broken.reason}; "
            f"{checked} record(s) before it verified",
            highlight=False,
        )
    if broken is not None:
        raise typer.Exit(1)


@audit_app.command("query")
def query(
    blueprint: BlueprintArg,
    since: Annotated[str | None, typer.Option(help="Only events of the last 90s, 10m, 2h, 1d...")] = None,
    route: Annotated[str | None, typer.Option(help="Only events of this endpoint (its name in the blueprint).")] = None,
    status: Annotated[str | None, typer.Option(help="Only responses with this status or class (404, 4xx).")] = None,
    consumer: Annotated[str | None, typer.Option(help="Only events of this authenticated caller.")] = None,
    limit: Annotated[int | None, typer.Option(help="Print at most this many records.")] = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Print the audit records matching every filter given, oldest first."""
    import datetime

    from rich.table import Table

    from backworks.cli import load_or_exit
    from backworks.pipeline.errors import PipelineError
    from backworks.tap.audit import store_path
    from backworks.tap.auditstore import AuditStore
    from backworks.tap.filters import seconds, status_range

    path = store_path(load_or_exit(blueprint))
    if not path.exists():
        raise fail(f"no audit store at {path}: run `backworks audit serve {blueprint}` first")
    try:
        after = time.time() - seconds(since) if since else None
        statuses = status_range(status) if status else None
    except PipelineError as exc:
        raise fail(str(exc), 2) from None
    store = AuditStore(path)
    try:
        found = list(store.query(since=after, route=route, status=statuses, consumer=consumer, limit=limit))
    finally:
        store.close()
    if format is Format.JSON:
        print(json.dumps(found))
        return
    table = Table(title=f"{len(found)} record(s)", title_justify="left")
    for column in ("seq", "at (UTC)", "event", "route", "status", "consumer", "request id"):
        table.add_column(column)
    for record in found:
        event = record["event"]
        at = event.get("at")
        when = (
            datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(at, int | float)
            else ""
        )
        table.add_row(
            str(record["seq"]),
            when,
            record["subject"].removeprefix("bw.evt."),
            str(event.get("route") or ""),
            str(event.get("status") or ""),
            str(event.get("consumer") or ""),
            str(event.get("request_id") or ""),
        )
    output().print(table)
