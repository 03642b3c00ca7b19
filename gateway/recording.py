"""Recording at the gateway: sampled copies of an endpoint's requests and responses into ``BW_RECORD``.

``backworks record`` turns recording on by writing a ``RecordingSwitch`` under the endpoint's name in the
``bw_record`` bucket; every gateway watches the bucket. The switch carries its own end (``until``): a gateway stops
recording at that time by itself, so a recording ends even when the command that started it died.

On the request path ``capture`` costs one dict lookup when the endpoint is not recorded, and a hash plus an append
to a bounded queue when it is: it never awaits, blocks or raises. A background task seals the request's
credentials (the dead-letter rule, ``pipeline.deadletters.seal_credentials``), builds the ``Recording`` and hands
it to the recorder's own ``EventPublisher`` (batched, acknowledged, every loss counted). What was sampled, queued
and lost shows in the gateway's health (``recording``).

Sampling is deterministic-random per request: the decision is a hash of the session and the request id, so the same
request (a client retrying with its ``x-request-id``) gets the same answer, and across requests the sampled share is
the configured one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter, deque
from dataclasses import dataclass

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError
from starlette.responses import Response

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import RECORD_BUCKET, record_subject
from backworks.contracts.recordings import RecordedResponse, Recording, RecordingSwitch
from backworks.contracts.types import Headers
from backworks.pipeline import credentials, kvwatch
from backworks.pipeline.deadletters import seal_credentials
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.recording")

RECORD_BODY_BYTES = 64 * 1024
"""Bytes of a response body kept in a recording; longer bodies keep their length and SHA-256 for comparison."""
MAX_QUEUED = 1000
"""Sampled requests waiting to be sealed and published, at most: beyond it a sample is dropped and counted."""
PUBLISH_BUFFER = 1000
"""Recordings waiting in the publisher, at most (they are whole requests: far fewer than events)."""
STOP_FLUSH_TIMEOUT = 2.0
SAMPLE_SPACE = 2**64


def sampled(session: str, request_id: str, share: float) -> bool:
    """Whether the request ``request_id`` is recorded in ``session`` at ``share`` (0 < share <= 1).

    Deterministic (the same arguments always give the same answer) and uniform over request ids: 64 bits of a
    BLAKE2b hash of session and request id, read as a fraction of 1.
    """
    if share >= 1:
        return True
    digest = hashlib.blake2b(f"{session}\0{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / SAMPLE_SPACE < share


@dataclass(frozen=True, slots=True)
class Capture:
    """What the request path hands over: references only, turned into a ``Recording`` off the request path."""

    switch: RecordingSwitch
    envelope: Envelope
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    total_ms: float
    at: float


def recording_of(capture: Capture) -> Recording:
    """The ``Recording`` of a capture: credentials masked, the originals sealed with the dead-letter key."""
    envelope = capture.envelope
    headers: Headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in capture.headers]
    sealed: str | None = None
    carries = credentials.carries_credentials(envelope) or any(credentials.is_credential_header(n) for n, _ in headers)
    if carries:
        sealed = seal_credentials(envelope, headers, "recording")
        envelope = credentials.redact_envelope(envelope)
        headers = credentials.redact_headers(headers)
    body = capture.body
    response = RecordedResponse(
        status=capture.status,
        headers=headers,
        body=body[:RECORD_BODY_BYTES],
        body_bytes=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        body_truncated=len(body) > RECORD_BODY_BYTES,
    )
    return Recording(
        session=capture.switch.session,
        endpoint=capture.switch.endpoint,
        recorded_at=capture.at,
        envelope=envelope,
        response=response,
        total_ms=round(capture.total_ms, 3),
        sealed=sealed,
        credentials_dropped=carries and sealed is None,
    )


class Recorder:
    """The gateway's recorder: watches the switches, samples requests, publishes recordings off the request path."""

    def __init__(self, client: Client, js: JetStreamContext) -> None:
        self.client = client
        self.js = js
        self.switches: dict[str, RecordingSwitch] = {}
        """Endpoint -> its recording switch, as the watch last saw it (expired ones are ignored when read)."""
        self.publisher = EventPublisher(client, max_buffer=PUBLISH_BUFFER)
        self._queue: deque[Capture] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.sampled = 0
        self.lost: Counter[str] = Counter()
        """Samples dropped before reaching the publisher, per reason (``overflow``, ``unrecordable``)."""

    def capture(self, endpoint: str, envelope: Envelope | None, response: Response, total_ms: float) -> None:
        """Record this request if its endpoint is being recorded and it is sampled; returns at once."""
        switch = self.switches.get(endpoint)
        if switch is None or envelope is None:
            return
        now = time.time()
        if now >= switch.until or not sampled(switch.session, envelope.request_id, switch.sample):
            return
        self.sampled += 1
        if len(self._queue) >= MAX_QUEUED:
            self.lost["overflow"] += 1
            return
        headers, body = list(response.raw_headers), bytes(response.body)
        self._queue.append(Capture(switch, envelope, response.status_code, headers, body, total_ms, now))
        self._wake.set()

    async def start(self) -> None:
        await self.publisher.start()
        self._tasks = [
            asyncio.create_task(self._watch_forever(), name="recording-watch"),
            asyncio.create_task(self._pump(), name="recording-pump"),
        ]

    async def stop(self) -> None:
        """Publish what was sampled (for at most ``STOP_FLUSH_TIMEOUT`` s), then stop."""
        for task in self._tasks:
            await cancel(task)
        self._tasks = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_TIMEOUT):
                await self._drain()
        self.lost["stopped"] += len(self._queue)
        self._queue.clear()
        await self.publisher.stop()

    def report(self) -> dict[str, object]:
        """What health shows: the endpoints being recorded, and what was sampled, published and lost."""
        now = time.time()
        published = self.publisher.report()
        return {
            "recording": {name: s.session for name, s in self.switches.items() if s.active(now)},
            "sampled": self.sampled,
            "queued": len(self._queue),
            "published": published,
            "lost": sum(self.lost.values()) + published["lost"],
            **{f"lost_{reason}": count for reason, count in self.lost.items() if count},
        }

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()

    async def _drain(self) -> None:
        while self._queue:
            capture = self._queue.popleft()
            try:
                recording = recording_of(capture)
            except Exception:  # a recording must never take the gateway down: count it and go on
                self.lost["unrecordable"] += 1
                log.exception("request not recorded", endpoint=capture.switch.endpoint)
                continue
            self.publisher.emit(record_subject(recording.endpoint, recording.session), recording)
            await asyncio.sleep(0)  # sealing costs CPU: let requests in between

    async def _watch_forever(self) -> None:
        def switched(entry: KeyValue.Entry) -> None:
            self._apply(entry.key, entry.value if entry.operation not in ("DEL", "PURGE") else None)

        await kvwatch.follow(self.client, self.js, RECORD_BUCKET, switched, what="recording switch")

    def _apply(self, endpoint: str, value: bytes | None) -> None:
        if not value:
            if self.switches.pop(endpoint, None) is not None:
                log.info("recording stopped", endpoint=endpoint)
            return
        try:
            switch = RecordingSwitch.model_validate_json(value)
        except ValidationError:
            log.warning("unreadable recording switch ignored", key=endpoint)
            return
        if switch.endpoint != endpoint:
            log.warning("recording switch for another endpoint ignored", key=endpoint, endpoint=switch.endpoint)
            return
        self.switches[endpoint] = switch
        log.info("recording", endpoint=endpoint, session=switch.session, sample=switch.sample, until=switch.until)
