"""The hand-off: moving an envelope on to its next stage, written once for every forwarder.

The gateway (first hop), every stage host (each later hop) and the test fixtures send envelopes the same
way: move past the stages that cannot take work now (``gate``; each skip goes to the event stream), then
publish to the next stage's subject with a ``Nats-Msg-Id`` derived from envelope id and cursor (JetStream
drops a repeated hand-off), or, once the itinerary is done, to the gateway's reply subject on core NATS.

A ``Forwarder`` also owns what that decision needs and starts and stops it as one unit: the acknowledged
publisher, the liveness view, the fleet's breakers, the dead-letter watch and the stall watch (a stage that
holds an envelope past its time limit is routed around, see ``stalls``). Per message it does only what a
hand-off needs (one gate check per stage, one encode, one publish, one watch entry); nothing here logs or
spawns a task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.envelope import Envelope, Stage, StageError
from backworks.contracts.names import MSG_ID_HEADER, message_id, retake_message_id, stage_subject
from backworks.contracts.types import FailureKind
from backworks.pipeline import kvwatch
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.breakers.transitions import publish_transitions
from backworks.pipeline.deadletters import DeadLetterWatch, bury, record_event
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.gate import StageGate
from backworks.pipeline.liveness import LivenessView
from backworks.pipeline.publisher import AckedPublisher, stream_sequence
from backworks.pipeline.replycache import RecentReplies
from backworks.pipeline.stalls import Held, StallWatch, Verdict, expected_hold_ms

log = structlog.get_logger("backworks.forwarder")

PUBLISH_TIMEOUT = 1.0
"""Seconds a hand-off waits for JetStream to acknowledge the publish."""
DUPLICATE = b'"duplicate"'
"""Only in a JetStream publish acknowledgement whose ``Nats-Msg-Id`` the stream already had (``"duplicate": true``)."""
READY_POLL = 0.05
RETRY_WINDOW = 10.0
"""Seconds (at most, and never past the request's deadline) a hand-off is tried again while no stream answers:
on a cluster, the time for a stream to elect a new leader after losing one (~2-5 s measured on loopback)."""


TRACEPARENT_HEADER = "traceparent"


def trace_headers(envelope: Envelope, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the request's W3C ``traceparent`` (OpenTelemetry messaging conventions), when it has one."""
    if envelope.traceparent:
        headers[TRACEPARENT_HEADER] = envelope.traceparent
    return headers


class Forwarder:
    """Sends envelopes to their next available stage, and owns the wiring that decision needs.

    Gated (the default, what the gateway and stage hosts use), a stage with no live replica or an open breaker
    is skipped (or, if critical, ends the request), and the forwarder takes its share of dead-letter advisories.
    Ungated, every stage is sent work and only the publisher runs: what a test sending straight to a stage wants.
    """

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        breaker_settings: Mapping[str, BreakerSettings],
        owner: str,
        *,
        gated: bool = True,
        publish_timeout: float = PUBLISH_TIMEOUT,
        owned: frozenset[str] | None = None,
    ) -> None:
        """``owned``: the instances whose breaker records this process writes (see ``FleetBreakers``)."""
        self.client = client
        self.js = js
        self.gated = gated
        self.publish_timeout = publish_timeout
        self.publisher = AckedPublisher(client)
        self.events = EventPublisher(client)
        """The process's one event publisher (``bw.evt.>``): the forwarder's owner emits through it too."""
        self.liveness = LivenessView(js)
        self.instances = tuple(breaker_settings)
        """The stages this forwarder may send to."""
        self.breakers = FleetBreakers(js, dict(breaker_settings), owner, owned)
        """Breakers of every stage this forwarder may send to (``owner`` names it in shared breaker state)."""
        publish_transitions(self.breakers, self.events)  # the transitions this process writes: once per fleet
        self.dead_letters = DeadLetterWatch(client, js, self.events)
        self.gate = StageGate(self.liveness, self.breakers) if gated else StageGate()
        self.stalls = StallWatch(js, self._route_around, self.liveness, self._disruptions)
        self.recent = RecentReplies(client)
        """The replies sent from here lately, sent again to a gateway that reconnected and asks for them."""

    def _disruptions(self) -> int:
        """Reconnects and retried publishes so far: the stall watch does not blame a stage for a broker's pause."""
        return kvwatch.reconnects(self.client) + self.publisher.retried

    def know(self, breaker_settings: Mapping[str, BreakerSettings]) -> None:
        """Stages a new blueprint revision added: this forwarder may send to them too (their breakers are watched)."""
        added = {name: settings for name, settings in breaker_settings.items() if name not in self.instances}
        if added:
            self.breakers.add(added)
            self.instances = (*self.instances, *added)

    async def start(self) -> None:
        await self.events.start()
        await self.publisher.start()
        await self.recent.start()
        if self.gated:
            await self.liveness.start()
            await self.breakers.start()
            await self.dead_letters.start()
            await self.stalls.start()

    async def stop(self) -> None:
        """Stop in reverse order of ``start``."""
        if self.gated:
            await self.stalls.stop()
            await self.dead_letters.stop()
            await self.breakers.stop()
            await self.liveness.stop()
        await self.recent.stop()
        await self.publisher.stop()
        await self.events.stop()

    async def ready(self, timeout: float) -> list[str]:
        """Wait (at most ``timeout`` s) until every stage this forwarder may send to has a live replica, or the
        liveness view has watched long enough to know which have none; returns those (empty: all live)."""
        if not self.gated:
            return []
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.liveness.ready.wait(), timeout)
        while True:
            missing = [name for name in self.instances if not self.liveness.count(name)]
            if not missing or all(self.liveness.absent(name) for name in missing) or loop.time() >= give_up:
                return missing
            await asyncio.sleep(READY_POLL)

    def blocked_critical(self, itinerary: list[Stage]) -> tuple[Stage, str] | None:
        """The first critical stage of ``itinerary`` that cannot take work, and why."""
        return self.gate.blocked_critical(itinerary)

    async def forward(
        self,
        envelope: Envelope,
        on_retry: Callable[[], Awaitable[None]] | None = None,
        failures: Sequence[StageError] = (),
    ) -> Stage | None:
        """Hand ``envelope`` on from its cursor; returns the stage it was sent to (None: sent to its reply subject).

        ``failures`` (what the stage that hands on recorded) and the skips made here go to the event stream once
        the hand-off is stored, and only if it was not a repeat: a hand-off JetStream already had (a stalled stage
        that was routed around and finished late, a redelivery) records nothing twice.

        While no stream answers (a cluster electing a leader) the publish is tried again, for at most
        ``RETRY_WINDOW`` s and never past the deadline, calling ``on_retry`` before each try (a stage host tells
        JetStream it is still working on the message, so it is not redelivered and run twice meanwhile).
        Raises ``PublishFailed`` when JetStream did not store the hand-off: the caller reports it.
        """
        nxt, skipped = self.gate.advance(envelope)
        data = envelope.to_json()
        if nxt is None:
            await self.client.publish(envelope.reply_to, data)
            self.recent.keep(envelope.reply_to, data)
            await self._record(envelope, failures, skipped)
            return None
        ack = await self.publisher.publish(
            stage_subject(nxt.instance, nxt.phase),
            data,
            trace_headers(envelope, {MSG_ID_HEADER: message_id(envelope.id, envelope.cursor)}),
            self.publish_timeout,
            retry_for=min(RETRY_WINDOW, envelope.remaining()),
            on_retry=on_retry,
        )
        if DUPLICATE in ack:
            return nxt
        await self._record(envelope, failures, skipped)
        if self.gated and (sequence := stream_sequence(ack)) is not None:
            self.stalls.watch(nxt, sequence, data, expected_hold_ms(envelope.itinerary, envelope.cursor))
        return nxt

    async def _record(self, envelope: Envelope, *groups: Sequence[StageError]) -> None:
        for group in groups:
            for error in group:
                record_event(self.events, envelope, error)

    async def _route_around(self, held: Held, verdict: Verdict) -> None:
        """A stage held ``held`` past its time limit: go on without it (optional), give it to the stage again
        (critical, another replica can serve it) or fail the request (critical, no other replica)."""
        envelope = Envelope.from_json(held.data)
        if envelope.remaining() <= 0:
            return  # nobody waits any more
        limit = held.stage.timeout_ms
        subject = stage_subject(held.stage.instance, held.stage.phase)
        if verdict is Verdict.RETAKE:
            retakes = held.retakes + 1
            held_ms = round(held.stalled_for * 1000)
            log.info("stage held the request past its time limit; handed to it again", stage=held.stage.label,
                     request_id=envelope.request_id, held_ms=held_ms, retake=retakes)  # fmt: skip
            headers = {MSG_ID_HEADER: retake_message_id(envelope.id, envelope.cursor, retakes)}
            ack = await self.publisher.publish(
                subject, held.data, trace_headers(envelope, headers), self.publish_timeout,
                retry_for=min(RETRY_WINDOW, envelope.remaining()),
            )  # fmt: skip
            if DUPLICATE not in ack and (sequence := stream_sequence(ack)) is not None:
                hold = expected_hold_ms(envelope.itinerary, envelope.cursor)
                self.stalls.watch(held.stage, sequence, held.data, hold, retakes=retakes)
            return
        critical = verdict is Verdict.FAIL
        why = "went on without it" if not critical else "failed the request"
        message = f"held the request for {held.stalled_for * 1000:.0f} ms, past its {limit} ms time limit; {why}"
        log.warning("stage stalled", stage=held.stage.label, request_id=envelope.request_id, detail=message)
        if critical:  # the request fails: what it carried goes to the dead letters, replayable, and the client is told
            await bury(self.client, self.js, self.events, envelope, subject, 1, message, FailureKind.TIMEOUT)
            return
        error = envelope.fail_stage(FailureKind.TIMEOUT, message, skip=True)
        await self.forward(envelope, failures=[error])
