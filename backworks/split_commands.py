"""``backworks split``: the canary splits the gateways rolled back (``bw_splits``), and putting them back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from backworks.console import Format, FormatOption, LocalNatsOption, console, output
from backworks.dlq_commands import _run, servers_from

if TYPE_CHECKING:
    from nats.aio.client import Client

    from backworks.contracts.splits import RolledBack

split_app = typer.Typer(
    help="Canary splits rolled back to their baseline: list them, reset them.", no_args_is_help=True
)


async def _held(client: Client, bucket: str) -> list[tuple[str, bytes]]:
    """The keys of ``bucket`` that hold a value, with it, sorted (none when the bucket is not declared)."""
    from nats.js.errors import KeyNotFoundError, NotFoundError

    from backworks.pipeline import broker, kvwatch

    js = broker.jetstream(client)
    try:
        kv = await js.key_value(bucket)
        keys = await kvwatch.keys(js, bucket)
    except NotFoundError:
        return []
    held: list[tuple[str, bytes]] = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # deleted or purged: a marker, no value
            continue
        if entry.value:
            held.append((key, entry.value))
    return held


async def _records(servers: list[str]) -> list[RolledBack]:
    from backworks.contracts.names import SPLITS_BUCKET
    from backworks.contracts.splits import RolledBack
    from backworks.pipeline import broker

    client = await broker.connect(servers, name="backworks-split")
    try:
        entries = await _held(client, SPLITS_BUCKET)
        return [RolledBack.model_validate_json(value) for _, value in entries]
    finally:
        await client.drain()


async def _reset(servers: list[str], endpoint: str, split: str | None) -> list[str]:
    from backworks.contracts.names import SPLITS_BUCKET
    from backworks.pipeline import broker

    client = await broker.connect(servers, name="backworks-split")
    try:
        held = [key for key, _ in await _held(client, SPLITS_BUCKET)]
        chosen = [key for key in held if key.partition(".")[0] == endpoint and split in (None, key.partition(".")[2])]
        kv = await broker.jetstream(client).key_value(SPLITS_BUCKET)
        for key in chosen:
            await kv.delete(key)
        return chosen
    finally:
        await client.drain()


@split_app.command("status")
def status(nats: LocalNatsOption = None, format: FormatOption = Format.TEXT) -> None:
    """List the splits rolled back to their baseline: endpoint, split, baseline, the branch found worse, and why."""
    import datetime

    from rich.table import Table

    found = _run(_records(servers_from(nats)))
    if format is Format.JSON:
        print(json.dumps([record.model_dump(mode="json") for record in found]))
        return
    table = Table(title=f"{len(found)} split(s) rolled back", title_justify="left")
    for column in ("endpoint", "split", "baseline", "worse branch", "since (UTC)", "why"):
        table.add_column(column)
    for record in found:
        since = datetime.datetime.fromtimestamp(record.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(record.endpoint, record.split, record.baseline, record.branch, since, record.reason)
    output().print(table)


@split_app.command("reset")
def reset(
    endpoint: Annotated[str, typer.Argument(help="The endpoint whose split(s) to reset.", show_default=False)],
    split: Annotated[
        str | None, typer.Argument(help="The split's name in the chain. Default: every split of the endpoint.")
    ] = None,
    nats: LocalNatsOption = None,
) -> None:
    """Put a rolled-back split back to its weights: every gateway resumes the canary at once."""
    removed = _run(_reset(servers_from(nats), endpoint, split))
    if not removed:
        console.print(f"no rolled-back split of endpoint {endpoint!r}{f' named {split!r}' if split else ''}")
        return
    for key in removed:
        output().print(f"reset {key}: its requests follow the split's weights again", highlight=False)
