"""``backworks dlq``: inspect and replay dead letters (envelopes that exhausted their deliveries)."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from backworks.console import Format, FormatOption, console, fail, output

if TYPE_CHECKING:
    from backworks.contracts.events import DeadLetter

dlq_app = typer.Typer(
    help="Inspect and replay dead letters (envelopes that exhausted their deliveries).", no_args_is_help=True
)

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats", help="NATS URL(s). Default: the embedded broker started in this state directory."),
]
REPLAY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def servers_from(nats: str | None) -> list[str]:
    from backworks.local.servers import resolve

    found = resolve(nats)
    if not found:
        raise fail("no broker given: pass --nats URL (or run this where `backworks up`/`backworks nats` runs)")
    return found


async def _collect(servers: list[str]) -> list[tuple[int, DeadLetter]]:
    from backworks.pipeline import broker
    from backworks.pipeline.deadletters import letters

    client = await broker.connect(servers, name="backworks-dlq")
    try:
        return [item async for item in letters(broker.jetstream(client))]
    finally:
        await client.drain()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    from backworks.pipeline.errors import PipelineError

    try:
        return asyncio.run(coro)
    except PipelineError as exc:
        raise fail(str(exc)) from None


@dlq_app.command("list")
def list_letters(nats: NatsUrl = None, format: FormatOption = Format.TEXT) -> None:
    """List dead letters: sequence, when, stage, request id, attempts and reason."""
    import datetime

    from rich.table import Table

    found = _run(_collect(servers_from(nats)))
    if format is Format.JSON:
        print(
            json.dumps([{"seq": seq, **letter.model_dump(mode="json", exclude={"envelope"})} for seq, letter in found])
        )
        return
    table = Table(title=f"{len(found)} dead letter(s)", title_justify="left")
    for column in ("seq", "dead at (UTC)", "stage", "request id", "attempts", "reason"):
        table.add_column(column)
    for seq, letter in found:
        when = datetime.datetime.fromtimestamp(letter.dead_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(seq), when, letter.stage, letter.envelope.request_id, str(letter.attempts), letter.error)
    output().print(table)


@dlq_app.command()
def show(seq: Annotated[int, typer.Argument(help="Sequence number from `dlq list`.")], nats: NatsUrl = None) -> None:
    """Print one dead letter as JSON, envelope included."""
    found = dict(_run(_collect(servers_from(nats))))
    if seq not in found:
        raise fail(f"no dead letter with sequence {seq}")
    print(found[seq].model_dump_json(indent=2))


async def _replay(servers: list[str], wanted: set[int] | None, keep: bool, timeout_ms: int) -> list[dict[str, Any]]:
    import time
    import uuid

    from backworks.contracts.names import DLQ_STREAM, MSG_ID_HEADER, message_id
    from backworks.pipeline import broker
    from backworks.pipeline.deadletters import letters

    client = await broker.connect(servers, name="backworks-dlq")
    js = broker.jetstream(client)
    done: list[dict[str, Any]] = []
    try:
        async for seq, letter in letters(js):
            if wanted is not None and seq not in wanted:
                continue
            envelope = letter.envelope
            envelope.id = uuid.uuid4().hex  # a new identity, so de-duplication does not drop the replay
            envelope.deadline = time.time() + timeout_ms / 1000
            envelope.errors = [e for e in envelope.errors if e.skipped]
            await js.publish(
                letter.subject, envelope.to_json(), headers={MSG_ID_HEADER: message_id(envelope.id, envelope.cursor)}
            )
            if not keep:
                await js.delete_msg(DLQ_STREAM, seq)
            done.append({"seq": seq, "subject": letter.subject, "request_id": envelope.request_id, "kept": keep})
    finally:
        await client.drain()
    return done


@dlq_app.command()
def replay(
    seq: Annotated[list[int] | None, typer.Argument(help="Sequence numbers to replay.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the dead letters after replaying them.")] = False,
    timeout_ms: Annotated[int, typer.Option(help="Deadline given to the replayed envelopes.")] = REPLAY_TIMEOUT_MS,
    nats: NatsUrl = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Re-inject dead letters into the stage they died at (with a new envelope id and deadline)."""
    if not seq and not all_:
        raise fail("name the sequence numbers to replay, or pass --all")
    done = _run(_replay(servers_from(nats), None if all_ else set(seq or []), keep, timeout_ms))
    if format is Format.JSON:
        print(json.dumps({"replayed": done}))
        return
    out = output()
    for item in done:
        out.print(f"replayed {item['seq']} -> {item['subject']} (request {item['request_id']})", highlight=False)
    console.print(f"{len(done)} dead letter(s) replayed", highlight=False)
