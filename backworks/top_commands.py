"""``backworks top``: a live view of every stage's replicas, backlog, rate, p99 and breaker."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from backworks.console import BlueprintArg, Format, FormatOption, NatsOption, fail, output

DEFAULT_INTERVAL_S = 2.0


def top(
    blueprint: BlueprintArg,
    nats: NatsOption = None,
    interval: Annotated[float, typer.Option(help="Seconds between readings (msgs/s is the change over one).")] = (
        DEFAULT_INTERVAL_S
    ),
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot (two readings --interval apart) and exit.")
    ] = False,
    format: FormatOption = Format.TEXT,
) -> None:
    """Live view of each stage: replicas, pending, ack pending, redelivered, msgs/s, p99, breaker (Ctrl-C stops)."""
    import asyncio

    from backworks.cli import admit_services, load_or_exit, resolve_servers
    from backworks.pipeline import broker
    from backworks.pipeline.errors import PipelineError
    from backworks.pipeline.permissions import TAP
    from backworks.top import Top, as_json, table

    if interval <= 0:
        raise fail("--interval must be above 0 seconds", 2)
    loaded = load_or_exit(blueprint)
    servers = resolve_servers(loaded, nats)
    admit_services(loaded, servers, TAP)
    title = f"backworks top: {loaded.model.name}"

    async def main() -> None:
        client = await broker.connect(servers, name="backworks-top", identity=TAP, settings=loaded.model.nats)
        view = Top(loaded, client, broker.jetstream(client, timeout=2.0))
        try:
            await view.start()
            rows = await view.read()
            if once:
                await asyncio.sleep(interval)
                rows = await view.read()
                if format is Format.JSON:
                    print(json.dumps(as_json(rows)))
                else:
                    output().print(table(rows, title))
                return
            if format is Format.JSON:  # one JSON document per line, one line per reading
                while True:
                    print(json.dumps(as_json(rows)), flush=True)
                    await asyncio.sleep(interval)
                    rows = await view.read()
            from rich.live import Live

            with Live(table(rows, title), console=output(), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(table(await view.read(), title), refresh=True)
        finally:
            await view.stop()
            await client.drain()

    try:
        asyncio.run(main())
    except PipelineError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
