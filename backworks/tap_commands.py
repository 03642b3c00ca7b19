"""``backworks analytics serve`` and ``backworks report``: aggregates of the event stream and their report."""

from __future__ import annotations

import json
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

analytics_app = typer.Typer(help="Rolling aggregates of the event stream, and alerts.", no_args_is_help=True)


@analytics_app.command("serve")
def serve(
    blueprint: BlueprintArg,
    nats: NatsOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
) -> None:
    """Keep per-endpoint, per-instance and per-consumer aggregates, answer reports, evaluate `alerts:`."""
    from backworks.subscribers import run_subscriber
    from backworks.tap.analytics import serve as serve_analytics

    run_subscriber("analytics", blueprint, nats, serve_analytics, metrics_port, metrics_host)


def report(
    since: Annotated[str, typer.Option(help="Window: 90s, 15m, 1h (at most 1h).")] = "15m",
    nats: Annotated[
        str | None,
        typer.Option("--nats", help="NATS URL(s). Default: the broker started in this state directory."),
    ] = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Print the analytics service's aggregates: per endpoint, plugin instance and consumer."""
    import asyncio

    from backworks.dlq_commands import servers_from
    from backworks.pipeline import broker
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.permissions import TAP
    from backworks.tap.filters import seconds
    from backworks.tap.reports import ask, tables

    try:
        window = seconds(since)
    except PipelineError as exc:
        raise fail(str(exc), 2) from None
    servers = servers_from(nats)

    async def fetch() -> dict[str, object]:
        client = await broker.connect(servers, name="backworks-report", identity=TAP)
        try:
            return await ask(client, window)
        finally:
            await client.drain()

    try:
        found = asyncio.run(fetch())
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if format is Format.JSON:
        print(json.dumps(found))
        return
    shown = tables(found)
    if not shown:
        output().print(f"no requests in the last {window:g} s", highlight=False)
    for table in shown:
        output().print(table)
