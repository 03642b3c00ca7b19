"""What the running gateway holds, and how it connects to the broker and lets go of it (the lifespan)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from backworks.gateway.replies import ReplyInbox
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.forwarder import Forwarder
from backworks.pipeline.liveness import LivenessView
from backworks.pipeline.permissions import GATEWAY

log = structlog.get_logger("backworks.gateway")

PUBLISH_TIMEOUT = 1.0
CONNECT_RETRY_FOR = 30.0
LIVENESS_READY_TIMEOUT = 2.0
"""Seconds the gateway waits at start for the registry, so the first requests see live replicas."""


@dataclass
class GatewayState:
    """What the running gateway holds: the broker connection, the reply inbox and the forwarder."""

    blueprint: LoadedBlueprint
    servers: list[str]
    gateway_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    client: Client | None = None
    js: JetStreamContext | None = None
    inbox: ReplyInbox | None = None
    forwarder: Forwarder | None = None
    access_log: bool = False

    @property
    def liveness(self) -> LivenessView | None:
        return self.forwarder.liveness if self.forwarder else None

    @property
    def breakers(self) -> FleetBreakers | None:
        return self.forwarder.breakers if self.forwarder else None


async def connect(state: GatewayState) -> None:
    """Connect (retrying for ``CONNECT_RETRY_FOR`` s), then start the reply inbox and the forwarder."""
    deadline = time.monotonic() + CONNECT_RETRY_FOR
    while True:
        try:
            state.client = await broker.connect(
                state.servers,
                name=f"backworks-gateway-{state.gateway_id}",
                identity=GATEWAY,
                settings=state.blueprint.model.nats,
            )
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for NATS", servers=state.servers, error=str(exc))
            await asyncio.sleep(0.5)
    state.js = broker.jetstream(state.client, timeout=PUBLISH_TIMEOUT)
    state.inbox = ReplyInbox(state.client, state.gateway_id)
    await state.inbox.start()
    settings = {name: item.spec.breaker for name, item in state.blueprint.instances.items()}
    state.forwarder = Forwarder(
        state.client,
        state.js,
        settings,
        f"gateway-{state.gateway_id}",
        publish_timeout=PUBLISH_TIMEOUT,
        owned=frozenset(),  # the gateway calls no plugin: it writes no breaker record
    )
    await state.forwarder.start()
    await state.forwarder.ready(LIVENESS_READY_TIMEOUT)


async def disconnect(state: GatewayState) -> None:
    """Undo ``connect``: stop the forwarder and the inbox, then drain the connection."""
    if state.forwarder:
        await state.forwarder.stop()
    if state.inbox:
        await state.inbox.stop()
    if state.client:
        if state.client.is_connected:
            await state.client.drain()
        else:  # reconnecting (the broker is down): drain would refuse, close gives up at once
            await state.client.close()
