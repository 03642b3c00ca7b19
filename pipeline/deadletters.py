"""Dead letters: envelopes that exhausted their deliveries at a stage go to ``BW_DLQ``, never vanish.

JetStream announces a message that reached a consumer's ``max_deliver`` with a MAX_DELIVERIES advisory
(core NATS). Every Backworks service (gateway and stage hosts) listens in one queue group, so exactly
one live process handles each advisory: it copies the envelope with stage, attempts and reason into
``BW_DLQ``, removes it from the pipeline stream, records an event, and sends the waiting gateway a
reply with the failure, so the client gets a problem+json at once instead of waiting for its deadline.

Only an envelope whose request did not go on is a dead letter. Exhausted deliveries do not prove that: a replica
frozen (SIGSTOP, a stalled VM) between its hand-off and its ack has done the work, and the client has its answer;
a replica that resumes after its deadline holds a redelivered copy another replica finished. Before burying, the
envelope's later hand-offs are fenced (``went_on``): a publish on ``FENCE_SUBJECT`` (in the pipeline stream, read
by no consumer, deleted at once) under the ``Nats-Msg-Id`` each later hand-off would carry. JetStream answering
``duplicate`` means that hand-off was stored: the request went on, nothing is buried. Otherwise the fence now holds
the id, so a late hand-off of the envelope is dropped as a repeat and the request cannot go on after its burial.
An envelope that died at its last stage has no stored hand-off to look for (its answer goes to the gateway on core
NATS): its letter says ``answer_unknown`` and ``dlq replay`` wants ``--force`` for it. The fence costs one publish
and one delete per later stage, on the burial path only.

A dead letter never holds a credential in clear: its envelope is stored with credentials masked
(``backworks.pipeline.credentials``) and the original headers and query are sealed with the deployment's
dead-letter key (``backworks.pipeline.sealing``), so ``restore`` can give a replay the request as it was. Without
a key the credentials are not kept at all, and the letter says so.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, ValidationError

from backworks.contracts.envelope import Envelope, StageError
from backworks.contracts.events import DeadLetter, StageEvent
from backworks.contracts.names import (
    DLQ_QUEUE_GROUP,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    FENCE_SUBJECT,
    MSG_ID_HEADER,
    PIPELINE_STREAM,
    dlq_message_id,
    dlq_subject,
    max_deliveries_advisory,
    message_id,
    stage_event_subject,
)
from backworks.contracts.types import FailureKind, Headers, QueryParams
from backworks.pipeline import credentials, sealing
from backworks.pipeline.errors import PipelineError
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.secrets import MASK

log = structlog.get_logger("backworks.dlq")

ADVISORY_SUBJECT = max_deliveries_advisory(PIPELINE_STREAM)
QUEUE_GROUP = DLQ_QUEUE_GROUP


class SealedRequest(BaseModel):
    """What a dead letter keeps encrypted: the parts of the envelope that hold credentials, as they were."""

    model_config = ConfigDict(extra="forbid")

    headers: Headers
    query: QueryParams
    response_headers: Headers | None = None


class CredentialsUnavailable(PipelineError):
    """A dead letter's credentials cannot be restored: not kept, or no key to open them."""


def dead_letter(
    envelope: Envelope, *, stage: str, subject: str, attempts: int, error: str, answer_unknown: bool = False
) -> DeadLetter:
    """The dead letter for ``envelope``: credentials masked, and sealed with the dead-letter key when there is one."""
    if not credentials.carries_credentials(envelope):
        return DeadLetter(
            stage=stage, subject=subject, attempts=attempts, error=error, envelope=envelope,
            answer_unknown=answer_unknown,
        )  # fmt: skip
    sealed = seal_credentials(envelope, envelope.response.headers if envelope.response else None, "dead letter")
    redacted = credentials.redact_envelope(envelope)
    return DeadLetter(
        stage=stage, subject=subject, attempts=attempts, error=error, envelope=redacted, sealed=sealed,
        credentials_dropped=sealed is None, answer_unknown=answer_unknown,
    )  # fmt: skip


def seal_credentials(envelope: Envelope, response_headers: Headers | None, what: str) -> str | None:
    """The request's headers and query and ``response_headers``, as they are, sealed with the dead-letter key; None
    (logged, naming ``what`` is kept without them) when there is no key. The one rule for every copy of a request
    kept at rest: dead letters and recordings (``backworks record``)."""
    kept = SealedRequest(headers=envelope.headers, query=envelope.query, response_headers=response_headers)
    try:
        return sealing.seal(kept.model_dump_json().encode())
    except sealing.DeadLetterKeyError as exc:
        log.warning(f"{what} kept without its credentials: they cannot be sealed", error=str(exc))
        return None


def open_seal(sealed: str) -> SealedRequest:
    """What ``seal_credentials`` sealed; ``CredentialsUnavailable`` when the key here does not open it."""
    try:
        return SealedRequest.model_validate_json(sealing.unseal(sealed))
    except sealing.DeadLetterKeyError as exc:
        raise CredentialsUnavailable(f"its credentials are sealed and cannot be restored here: {exc}") from None


def restore(letter: DeadLetter) -> Envelope:
    """The envelope of ``letter`` as it died, credentials included, for a replay.

    A letter whose credentials were not kept (no key where it died) gives its envelope without them: there is
    nothing else to replay. A sealed one whose key is not here raises ``CredentialsUnavailable``.
    """
    if letter.credentials_dropped:
        return without_credentials(letter)
    envelope = letter.envelope.model_copy(deep=True)
    if letter.sealed is None:
        return envelope  # nothing was sealed: no credentials, or a letter stored before sealing existed
    kept = open_seal(letter.sealed)
    envelope.headers, envelope.query = kept.headers, kept.query
    if envelope.response is not None and kept.response_headers is not None:
        envelope.response.headers = kept.response_headers
    return envelope


def without_credentials(letter: DeadLetter) -> Envelope:
    """The envelope of ``letter`` with its (masked) credentials left out."""
    envelope = credentials.redact_envelope(letter.envelope.model_copy(deep=True))
    envelope.headers = [(name, value) for name, value in envelope.headers if value != MASK]
    envelope.query = [(name, value) for name, value in envelope.query if value != MASK]
    return envelope


def record_event(events: EventPublisher, envelope: Envelope, error: StageError) -> None:
    """Put a stage failure on the event stream (through the process's publisher: never blocks, never raises;
    a loss is counted in its report)."""
    event = StageEvent(
        kind=error.kind,
        stage=error.stage,
        envelope_id=envelope.id,
        request_id=envelope.request_id,
        trace_id=envelope.trace_id,
        route=envelope.route,
        message=error.message,
        skipped=error.skipped,
    )
    events.emit(stage_event_subject(error.kind), event)


async def went_on(js: JetStreamContext, envelope: Envelope) -> bool | None:
    """Whether ``envelope``'s request went on past its current stage (see the module docstring).

    True: a later hand-off is stored. False: none is, and none can be any more (each is fenced). None: the
    envelope is at its last stage, whose answer is not stored anywhere to look for.
    """
    later = range(envelope.cursor + 1, len(envelope.itinerary))
    if not later:
        return None
    for position in later:  # in order: a fence never blocks a hand-off beyond one that was stored
        ack = await js.publish(FENCE_SUBJECT, b"", headers={MSG_ID_HEADER: message_id(envelope.id, position)})
        if ack.duplicate:
            return True
        await js.delete_msg(PIPELINE_STREAM, ack.seq)
    return False


async def bury(
    client: Client,
    js: JetStreamContext,
    events: EventPublisher,
    envelope: Envelope,
    subject: str,
    attempts: int,
    reason: str,
    kind: FailureKind,
) -> bool:
    """Store the envelope in ``BW_DLQ`` and answer the waiting gateway with the failure, unless its request went on.

    Returns whether it was buried. The caller has claimed the envelope (deleted it from the pipeline stream, or
    holds the only delivery left).
    """
    stage = envelope.current
    label = stage.label if stage else "unknown"
    onward = await went_on(js, envelope)
    if onward:
        log.info("not a dead letter: its request went on past the stage", stage=label, attempts=attempts)
        return False
    letter = dead_letter(
        envelope, stage=label, subject=subject, attempts=attempts, error=reason, answer_unknown=onward is None
    )
    await js.publish(
        dlq_subject(label),
        letter.model_dump_json().encode(),
        headers={MSG_ID_HEADER: dlq_message_id(envelope.id, envelope.cursor)},
    )
    error = envelope.fail_stage(kind, reason, skip=False)
    record_event(events, envelope, error)
    if envelope.reply_to and envelope.remaining() > 0:
        await client.publish(envelope.reply_to, envelope.to_json())
    log.warning("envelope dead-lettered", stage=label, attempts=attempts, reason=reason)
    return True


class DeadLetterWatch:
    """Handles MAX_DELIVERIES advisories for the pipeline stream (one handler per advisory, fleet-wide)."""

    def __init__(self, client: Client, js: JetStreamContext, events: EventPublisher) -> None:
        self.client = client
        self.js = js
        self.events = events
        self._sub: Subscription | None = None
        self.handled = 0

    async def start(self) -> None:
        self._sub = await self.client.subscribe(ADVISORY_SUBJECT, queue=QUEUE_GROUP, cb=self._on_advisory)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            sequence = int(advisory["stream_seq"])
            attempts = int(advisory.get("deliveries", 0))
            consumer = str(advisory.get("consumer", "?"))
        except (ValueError, KeyError, TypeError):
            log.error("unreadable max-deliveries advisory", data=msg.data[:200])
            return
        try:
            raw = await self.js.get_msg(PIPELINE_STREAM, sequence)
        except NotFoundError:
            return  # already handled (or acked late by a slow replica)
        except Exception as exc:
            log.error("cannot read dead letter", sequence=sequence, error=repr(exc))
            return
        reason = f"no replica of {consumer} acknowledged it in {attempts} deliveries (crashed, hung or killed)"
        try:
            envelope = Envelope.from_json(raw.data or b"")
        except ValidationError:
            log.error("unreadable envelope left in the pipeline stream", sequence=sequence)
            return
        # Advisories of one subscription share a task: bind for this one and unbind after.
        with structlog.contextvars.bound_contextvars(request_id=envelope.request_id):
            await bury(
                self.client, self.js, self.events, envelope, raw.subject or "", attempts, reason, FailureKind.EXHAUSTED
            )
        with contextlib.suppress(NotFoundError):  # acknowledged late by a replica that went on: gone either way
            await self.js.delete_msg(PIPELINE_STREAM, sequence)
        self.handled += 1


async def letters(js: JetStreamContext) -> AsyncIterator[tuple[int, DeadLetter]]:
    """Every dead letter in ``BW_DLQ``, oldest first, with its sequence number."""
    info = await js.stream_info(DLQ_STREAM)
    sequence = info.state.first_seq
    last = info.state.last_seq
    while sequence and sequence <= last:
        try:
            raw = await js.get_msg(DLQ_STREAM, sequence, subject=DLQ_SUBJECTS, next=True)
        except NotFoundError:
            return
        if raw.seq is None:
            return
        try:
            yield raw.seq, DeadLetter.model_validate_json(raw.data or b"")
        except ValidationError:
            log.warning("unreadable dead letter skipped", sequence=raw.seq)
        sequence = raw.seq + 1
