"""``backworks dlq``: inspect and replay dead letters (envelopes that exhausted their deliveries)."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from backworks.console import Format, FormatOption, LocalNatsOption, console, fail, output

if TYPE_CHECKING:
    from backworks.contracts.events import DeadLetter

dlq_app = typer.Typer(
    help="Inspect and replay dead letters (envelopes that exhausted their deliveries).", no_args_is_help=True
)

REPLAY_TIMEOUT_MS = 30_000
UNKNOWN_ANSWER = (
    "it died at its request's last stage, whose answer may have reached the client: a replay would run the request"
    " again; pass --force to replay it anyway"
)
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
def list_letters(nats: LocalNatsOption = None, format: FormatOption = Format.TEXT) -> None:
    """List dead letters: sequence, when, stage, request id, attempts and reason."""
    import datetime

    from rich.table import Table

    found = _run(_collect(servers_from(nats)))
    if format is Format.JSON:
        hidden = {"envelope", "sealed"}  # `dlq show` prints the envelope (masked); the seal is for `dlq replay`
        listed = [
            {"seq": seq, "request_id": letter.envelope.request_id, **letter.model_dump(mode="json", exclude=hidden)}
            for seq, letter in found
        ]
        print(json.dumps(listed))
        return
    table = Table(title=f"{len(found)} dead letter(s)", title_justify="left")
    for column in ("seq", "dead at (UTC)", "stage", "request id", "attempts", "reason"):
        table.add_column(column)
    for seq, letter in found:
        when = datetime.datetime.fromtimestamp(letter.dead_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(seq), when, letter.stage, letter.envelope.request_id, str(letter.attempts), letter.error)
    output().print(table)


def shown(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as ``dlq show`` prints it: credentials masked (letters stored before sealing too), no seal."""
    from backworks.pipeline.credentials import redact_envelope

    data = letter.model_dump(mode="json", exclude={"sealed", "credentials_dropped"})
    data["envelope"] = redact_envelope(letter.envelope).model_dump(mode="json")
    if letter.sealed:
        data["credentials"] = "sealed: `dlq replay` restores them where the dead-letter key is"
    elif letter.credentials_dropped:
        data["credentials"] = "not kept: there was no dead-letter key where it died"
    else:
        data["credentials"] = "none sealed"
    return data


@dlq_app.command()
def show(
    seq: Annotated[int, typer.Argument(help="Sequence number from `dlq list`.")], nats: LocalNatsOption = None
) -> None:
    """Print one dead letter as JSON, envelope included, its credentials masked."""
    found = dict(_run(_collect(servers_from(nats))))
    if seq not in found:
        raise fail(f"no dead letter with sequence {seq}")
    print(json.dumps(shown(found[seq]), indent=2))


async def _replay(
    servers: list[str], wanted: set[int] | None, keep: bool, timeout_ms: int, force: bool = False
) -> list[dict[str, Any]]:
    """Replay the ``wanted`` letters; each result says where it went, or ``refused`` and why."""
    import time
    import uuid

    from backworks.contracts.names import DLQ_STREAM, MSG_ID_HEADER, message_id
    from backworks.pipeline import broker
    from backworks.pipeline.deadletters import CredentialsUnavailable, letters, restore

    client = await broker.connect(servers, name="backworks-dlq")
    js = broker.jetstream(client)
    done: list[dict[str, Any]] = []
    try:
        async for seq, letter in letters(js):
            if wanted is not None and seq not in wanted:
                continue
            if letter.answer_unknown and not force:
                done.append({"seq": seq, "subject": letter.subject, "request_id": letter.envelope.request_id,
                             "refused": UNKNOWN_ANSWER})  # fmt: skip
                continue
            try:
                envelope = restore(letter)
            except CredentialsUnavailable as exc:
                done.append({"seq": seq, "subject": letter.subject, "request_id": letter.envelope.request_id,
                             "refused": str(exc)})  # fmt: skip
                continue
            envelope.id = uuid.uuid4().hex  # a new identity, so de-duplication does not drop the replay
            envelope.deadline = time.time() + timeout_ms / 1000
            envelope.errors = [e for e in envelope.errors if e.skipped]
            await js.publish(
                letter.subject, envelope.to_json(), headers={MSG_ID_HEADER: message_id(envelope.id, envelope.cursor)}
            )
            if not keep:
                await js.delete_msg(DLQ_STREAM, seq)
            done.append({"seq": seq, "subject": letter.subject, "request_id": envelope.request_id, "kept": keep,
                         "credentials": not letter.credentials_dropped})  # fmt: skip
    finally:
        await client.drain()
    return done


@dlq_app.command()
def replay(
    seq: Annotated[list[int] | None, typer.Argument(help="Sequence numbers to replay.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the dead letters after replaying them.")] = False,
    force: Annotated[
        bool, typer.Option(help="Also replay letters whose request may have been answered (`answer_unknown`).")
    ] = False,
    timeout_ms: Annotated[int, typer.Option(help="Deadline given to the replayed envelopes.")] = REPLAY_TIMEOUT_MS,
    nats: LocalNatsOption = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Re-inject dead letters into the stage they died at (with a new envelope id and deadline).

    Their requests' credentials are restored from the seal, which needs the dead-letter key of the services that
    wrote them (``$BACKWORKS_STATE_DIR/dlq.key`` or ``$BACKWORKS_DLQ_KEY_FILE``): without it a letter is refused,
    saying why, and the command exits with 1. A letter whose credentials were not kept is replayed without them.
    A letter that died at its request's last stage may have had its answer sent (``answer_unknown``): it is
    refused unless ``--force``, as a replay would run the request a second time.
    """
    if not seq and not all_:
        raise fail("name the sequence numbers to replay, or pass --all")
    wanted = None if all_ else set(seq or [])
    results = _run(_replay(servers_from(nats), wanted, keep, timeout_ms, force))
    done = [item for item in results if "refused" not in item]
    refused = [item for item in results if "refused" in item]
    if format is Format.JSON:
        print(json.dumps({"replayed": done, "refused": refused}))
    else:
        out = output()
        for item in done:
            note = "" if item["credentials"] else ", without its credentials: they were not kept"
            out.print(f"replayed {item['seq']} -> {item['subject']} (request {item['request_id']}{note})",
                      highlight=False)  # fmt: skip
        for item in refused:
            console.print(f"not replayed {item['seq']}: {item['refused']}", highlight=False, markup=False)
        console.print(f"{len(done)} dead letter(s) replayed", highlight=False)
    if refused:
        raise typer.Exit(1)
