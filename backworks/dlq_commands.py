"""``backworks dlq``: inspect and replay dead letters (envelopes that exhausted their deliveries)."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from typing import Annotated

import typer
from rich.table import Table

from backworks.console import console, fail
from backworks.contracts.events import DeadLetter
from backworks.contracts.names import DLQ_STREAM, MSG_ID_HEADER, message_id
from backworks.pipeline import broker
from backworks.pipeline.deadletters import letters
from backworks.pipeline.errors import PipelineError
from backworks.pipeline.state import recorded_nats_url, split_servers

dlq_app = typer.Typer(help="Inspect and replay dead letters (envelopes that exhausted their deliveries).")

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats", help="NATS URL(s). Default: the embedded broker started in this state directory."),
]
REPLAY_TIMEOUT_MS = 30_000


def servers_from(nats: str | None) -> list[str]:
    if nats:
        return split_servers(nats)
    recorded = recorded_nats_url()
    if recorded:
        return [recorded]
    raise fail("no broker given: pass --nats URL (or run this where `backworks up`/`backworks nats` runs)")


async def _collect(servers: list[str]) -> list[tuple[int, DeadLetter]]:
    client = await broker.connect(servers, name="backworks-dlq")
    try:
        return [item async for item in letters(broker.jetstream(client))]
    finally:
        await client.drain()


def _run(coro: object) -> object:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except PipelineError as exc:
        raise fail(str(exc)) from None


@dlq_app.command("list")
def list_letters(nats: NatsUrl = None, format: Annotated[str, typer.Option(help="table or json")] = "table") -> None:
    """List dead letters: sequence, when, stage, request id, attempts and reason."""
    found = _run(_collect(servers_from(nats)))
    assert isinstance(found, list)
    if format == "json":
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
    console.print(table)


@dlq_app.command()
def show(seq: Annotated[int, typer.Argument(help="Sequence number from `dlq list`.")], nats: NatsUrl = None) -> None:
    """Print one dead letter as JSON, envelope included."""
    found = dict(_run(_collect(servers_from(nats))))  # type: ignore[call-overload]
    if seq not in found:
        raise fail(f"no dead letter with sequence {seq}")
    print(found[seq].model_dump_json(indent=2))


async def _replay(servers: list[str], wanted: set[int] | None, keep: bool, timeout_ms: int) -> list[str]:
    client = await broker.connect(servers, name="backworks-dlq")
    js = broker.jetstream(client)
    done: list[str] = []
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
            done.append(f"{seq} -> {letter.subject} (request {envelope.request_id})")
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
) -> None:
    """Re-inject dead letters into the stage they died at (with a new envelope id and deadline)."""
    if not seq and not all_:
        raise fail("name the sequence numbers to replay, or pass --all")
    done = _run(_replay(servers_from(nats), None if all_ else set(seq or []), keep, timeout_ms))
    assert isinstance(done, list)
    for line in done:
        console.print(f"replayed {line}", highlight=False)
    console.print(f"{len(done)} dead letter(s) replayed", highlight=False)
