"""The hand-off: moving an envelope on to its next stage, written once for every forwarder.

The gateway (first hop), every stage host (each later hop) and the test fixtures send envelopes the same
way: move past the stages that cannot take work now (``gate``; each skip goes to the event stream), then
publish to the next stage's subject with a ``Nats-Msg-Id`` derived from envelope id and cursor (JetStream
drops a repeated hand-off), or, once the itinerary is done, to the gateway's reply subject on core NATS.

A ``Forwarder`` also owns what that decision needs and starts and stops it as one unit: the acknowledged
publisher, the liveness view, the fleet's breakers and the dead-letter watch. Per message it does only what
a hand-off needs (one gate check per stage, one encode, one publish); nothing here logs or spawns a task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

from nats.aio.client import Client
from nats.js import JetStreamContext

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.names import MSG_ID_HEADER, message_id, stage_subject
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.deadletters import DeadLetterWatch, record_event
from backworks.pipeline.gate import StageGate
from backworks.pipeline.liveness import LivenessView
from backworks.pipeline.publisher import AckedPublisher

PUBLISH_TIMEOUT = 1.0
"""Seconds a hand-off waits for JetStream to acknowledge the publish."""
RETRY_WINDOW = 10.0
"""Seconds (at most, and never past the request's deadline) a hand-off is tried again while no stream answers:
on a cluster, the time for a stream to elect a new leader after losing one (~2-5 s measured on loopback)."""


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
        self.gated = gated
        self.publish_timeout = publish_timeout
        self.publisher = AckedPublisher(client)
        self.liveness = LivenessView(js)
        self.breakers = FleetBreakers(js, dict(breaker_settings), owner, owned)
        """Breakers of every stage this forwarder may send to (``owner`` names it in shared breaker state)."""
        self.dead_letters = DeadLetterWatch(client, js)
        self.gate = StageGate(self.liveness, self.breakers) if gated else StageGate()

    async def start(self) -> None:
        await self.publisher.start()
        if self.gated:
            await self.liveness.start()
            await self.breakers.start()
            await self.dead_letters.start()

    async def stop(self) -> None:
        """Stop in reverse order of ``start``."""
        if self.gated:
            await self.dead_letters.stop()
            await self.breakers.stop()
            await self.liveness.stop()
        await self.publisher.stop()

    async def ready(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the liveness view has read the registry once."""
        if self.gated:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.liveness.ready.wait(), timeout)

    def blocked_critical(self, itinerary: list[Stage]) -> tuple[Stage, str] | None:
        """The first critical stage of ``itinerary`` that cannot take work, and why."""
        return self.gate.blocked_critical(itinerary)

    async def forward(self, envelope: Envelope, on_retry: Callable[[], Awaitable[None]] | None = None) -> Stage | None:
        """Hand ``envelope`` on from its cursor; returns the stage it was sent to (None: sent to its reply subject).

        While no stream answers (a cluster electing a leader) the publish is tried again, for at most
        ``RETRY_WINDOW`` s and never past the deadline, calling ``on_retry`` before each try (a stage host tells
        JetStream it is still working on the message, so it is not redelivered and run twice meanwhile).
        Raises ``PublishFailed`` when JetStream did not store the hand-off: the caller reports it.
        """
        nxt, skipped = self.gate.advance(envelope)
        for error in skipped:
            await record_event(self.client, envelope, error)
        data = envelope.to_json()
        if nxt is None:
            await self.client.publish(envelope.reply_to, data)
            return None
        await self.publisher.publish(
            stage_subject(nxt.instance, nxt.phase),
            data,
            {MSG_ID_HEADER: message_id(envelope.id, envelope.cursor)},
            self.publish_timeout,
            retry_for=min(RETRY_WINDOW, envelope.remaining()),
            on_retry=on_retry,
        )
        return nxt
