"""``backworks split``: the canary splits the gateways rolled back (``bw_splits``), and putting them back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from backworks.console import Format, FormatOption, LocalNatsOption, console, output
from backworks.dlq_commands import _run, servers_from

if TYPE_CHECKING:
    from backworks.contracts.splits import RolledBack

split_app = typer.Typer(
    help="Canary splits rolled back to their baseline: list them, reset them.", no_args_is_help=True
)


async def _records(servers: list[str]) -> list[RolledBack]:
    from nats.js.errors import NoKeysError, NotFoundError

    from backworks.contracts.names import SPLITS_BUCKET
    from backworks.contracts.splits import RolledBack
    from backworks.pipeline import broker

    client = await broker.connect(servers, name="backworks-split")
    try:
        try:
            kv = await broker.jetstream(client).key_value(SPLITS_BUCKET)
            keys = await kv.keys()
        except (NoKeysError, NotFoundError):
            return []
        found: list[RolledBack] = []
        for key in sorted(keys):
            entry = await kv.get(key)
            if entry.value:
                found.append(RolledBack.model_validate_json(entry.value))
        return found
    finally:
        await client.drain()


async def _reset(servers: list[str], endpoint: str, split: str | None) -> list[str]:
    from nats.js.errors import NoKeysError, NotFoundError

    from backworks.contracts.names import SPLITS_BUCKET
    from backworks.pipeline import broker

    client = await broker.connect(servers, name="backworks-split")
    try:
        try:
            kv = await broker.jetstream(client).key_value(SPLITS_BUCKET)
            keys = await kv.keys()
        except (NoKeysError, NotFoundError):
            return []
        chosen = [key for key in keys if key.partition(".")[0] == endpoint and split in (None, key.partition(".")[2])]
        for key in chosen:
            await kv.delete(key)
        return sorted(chosen)
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
