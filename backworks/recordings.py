"""The admin side of recording: switching a recording on and off, counting and reading back what was recorded.

The gateways do the recording (``backworks.gateway.recording``); this module writes the switch they watch
(``bw_record``, one key per endpoint) and reads ``BW_RECORD``, which only the admin identity may read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from backworks.contracts.names import RECORD_BUCKET, RECORD_STREAM, record_subject
from backworks.contracts.recordings import Recording, RecordingSwitch
from backworks.pipeline.errors import PipelineError

log = structlog.get_logger("backworks.recordings")

SESSION_CHARS = 12


class NoRecording(PipelineError):
    """No recorded request matches what was asked for."""


def new_switch(endpoint: str, sample: float, seconds: float, now: float | None = None) -> RecordingSwitch:
    """A switch that records ``sample`` of ``endpoint``'s requests for ``seconds`` from ``now``, as a new session."""
    started = time.time() if now is None else now
    return RecordingSwitch(
        session=uuid.uuid4().hex[:SESSION_CHARS], endpoint=endpoint, sample=sample, started_at=started,
        until=started + seconds,
    )  # fmt: skip


async def switch_on(js: JetStreamContext, switch: RecordingSwitch) -> None:
    kv = await js.key_value(RECORD_BUCKET)
    await kv.put(switch.endpoint, switch.model_dump_json().encode())


async def switch_off(js: JetStreamContext, endpoint: str) -> None:
    """Stop recording ``endpoint`` now (gateways see the key deleted)."""
    kv = await js.key_value(RECORD_BUCKET)
    await kv.delete(endpoint)


async def recorded(js: JetStreamContext, endpoint: str, session: str) -> int:
    """How many requests of ``session`` are in ``BW_RECORD``."""
    subject = record_subject(endpoint, session)
    info = await js.stream_info(RECORD_STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def latest_session(js: JetStreamContext, endpoint: str | None) -> tuple[str, str]:
    """(endpoint, session) of the most recent recording, of ``endpoint`` when given."""
    subject = record_subject(endpoint, "*") if endpoint else record_subject("*", "*")
    try:
        raw = await js.get_last_msg(RECORD_STREAM, subject)
    except NotFoundError:
        where = f" of endpoint {endpoint}" if endpoint else ""
        hint = "record some with `backworks record`"
        raise NoRecording(f"no recorded request{where} in {RECORD_STREAM}: {hint}") from None
    _, _, found_endpoint, session = (raw.subject or "").split(".", 3)
    return found_endpoint, session


async def recordings(js: JetStreamContext, endpoint: str, session: str) -> AsyncIterator[tuple[int, Recording]]:
    """Every recorded request of ``session``, oldest first, with its sequence number."""
    subject = record_subject(endpoint, session)
    info = await js.stream_info(RECORD_STREAM)
    sequence, last = info.state.first_seq, info.state.last_seq
    while sequence and sequence <= last:
        try:
            raw = await js.get_msg(RECORD_STREAM, sequence, subject=subject, next=True)
        except NotFoundError:
            return
        if raw.seq is None:
            return
        try:
            yield raw.seq, Recording.model_validate_json(raw.data or b"")
        except ValidationError:
            log.warning("unreadable recording skipped", sequence=raw.seq)
        sequence = raw.seq + 1
