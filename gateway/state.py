"""What the running gateway holds, and how it connects to the broker and lets go of it (the lifespan)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from backworks.gateway.backpressure import BackpressureWatch
from backworks.gateway.connections import EdgeStats
from backworks.gateway.recording import Recorder
from backworks.gateway.replies import ReplyInbox
from backworks.pipeline import broker, tracing
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.forwarder import Forwarder
from backworks.pipeline.liveness import LivenessView
from backworks.pipeline.permissions import GATEWAY

if TYPE_CHECKING:
    from backworks.gateway.metrics import GatewayMetrics
    from backworks.gateway.rollback import SplitRollbacks
    from backworks.pipeline.fleetprobe import ProbeResponder
    from backworks.pipeline.otel import Tracing
    from backworks.pipeline.revisions import RevisionFollower

log = structlog.get_logger("backworks.gateway")

PUBLISH_TIMEOUT = 1.0
CONNECT_RETRY_FOR = 30.0
BASE64_GROWTH = 4 / 3
"""The envelope carries the body base64-encoded."""
ENVELOPE_OVERHEAD = 4096
"""Bytes of an envelope besides its body and headers (ids, itinerary, timings), generously."""
LIVENESS_READY_TIMEOUT = 5.0
"""Seconds the gateway waits at start for every stage's heartbeat (or to know which stages have none), so the
first requests are neither degraded nor refused for a stage that is in fact live."""


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
    dropped: Counter[str] = field(default_factory=Counter)
    """Requests the gateway itself answered with a 5xx, per cause: what health shows beside the replicas' drops."""
    metrics: GatewayMetrics | None = None
    """Prometheus metrics (``/_backworks/metrics``), set by the app."""
    edge: EdgeStats = field(default_factory=EdgeStats)
    """What the HTTP edge counted (refused, evicted, timed-out connections...), filled by the server."""
    recorder: Recorder | None = None
    """Copies sampled requests of the endpoints being recorded into ``BW_RECORD`` (``backworks record``)."""
    rollbacks: SplitRollbacks | None = None
    """Canary splits rolled back (``gateway.rollback``); None when the blueprint has no split."""
    backpressure: BackpressureWatch | None = None
    """Each stage's pending / unacknowledged work, polled in the background (health, metrics)."""
    tracing: Tracing | None = None
    """The OTLP span exporter, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``pipeline.tracing``)."""
    revision: int | None = None
    """The blueprint revision served (``bw_config``); None: a blueprint file with no revision stored."""
    on_switch: Callable[[LoadedBlueprint, int], None] | None = None
    """Swaps the app's routes to a new revision (set by the app; see ``gateway.revisions``)."""
    follower: RevisionFollower | None = None
    probe: ProbeResponder | None = None

    @property
    def liveness(self) -> LivenessView | None:
        return self.forwarder.liveness if self.forwarder else None

    @property
    def breakers(self) -> FleetBreakers | None:
        return self.forwarder.breakers if self.forwarder else None


async def connect(state: GatewayState) -> None:
    """Connect (retrying for ``CONNECT_RETRY_FOR`` s), then start the reply inbox and the forwarder."""
    deadline = time.monotonic() + CONNECT_RETRY_FOR

    async def reconnected() -> None:
        if state.inbox is not None:  # a reply published while the connection was down was dropped: ask again
            await state.inbox.reconnected()

    while True:
        try:
            state.client = await broker.connect(
                state.servers,
                name=f"backworks-gateway-{state.gateway_id}",
                identity=GATEWAY,
                settings=state.blueprint.model.nats,
                on_reconnect=reconnected,
            )
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for NATS", servers=state.servers, error=str(exc))
            await asyncio.sleep(0.5)
    warn_if_limits_exceed_max_payload(state)
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
    state.recorder = Recorder(state.client, state.js)
    await state.recorder.start()
    await start_rollbacks(state)
    missing = await state.forwarder.ready(LIVENESS_READY_TIMEOUT)
    if missing:
        log.warning("stages without a live replica at start", missing=missing)
    state.backpressure = BackpressureWatch(state.js, state.blueprint)
    await state.backpressure.start()
    state.tracing = tracing.start("backworks-gateway", state.gateway_id)
    from backworks.gateway.revisions import follow  # it imports this module

    await follow(state)


def warn_if_limits_exceed_max_payload(state: GatewayState) -> None:
    """Say at start when a request within the edge's limits may not fit the broker's ``max_payload``.

    Such a request is answered 413 (it is not lost), but the limits then promise more than the broker carries.
    """
    if state.client is None:
        return
    settings = state.blueprint.model.gateway
    largest = settings.max_body_bytes * BASE64_GROWTH + settings.max_header_bytes + ENVELOPE_OVERHEAD
    if largest > state.client.max_payload:
        log.warning(
            "a request within the gateway's limits may exceed the broker's max_payload; it would be answered 413",
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
            largest_envelope=int(largest),
            max_payload=state.client.max_payload,
            hint="lower gateway.max_body_bytes or raise max_payload in the NATS server's configuration",
        )


async def start_rollbacks(state: GatewayState) -> None:
    """Watch the canary rollbacks when the blueprint has splits (``gateway.rollback``)."""
    from backworks.gateway.rollback import SplitRollbacks

    rollbacks = SplitRollbacks(state.gateway_id, state.forwarder.events if state.forwarder else None)
    if SplitRollbacks.needed(state.blueprint) and state.client is not None and state.js is not None:
        await rollbacks.start(state.client, state.js)
        state.rollbacks = rollbacks


async def disconnect(state: GatewayState) -> None:
    """Undo ``connect``: stop the recorder, the rollbacks, the backpressure watch and the tracer, the forwarder and
    the inbox, then drain the connection."""
    if state.recorder:
        await state.recorder.stop()
    if state.rollbacks:
        await state.rollbacks.stop()
    if state.backpressure:
        await state.backpressure.stop()
    if state.tracing:
        state.tracing.shutdown()  # flushes the spans still batched
    """Undo ``connect``: stop following revisions, stop the forwarder and the inbox, then drain the connection."""
    from backworks.gateway.revisions import unfollow

    await unfollow(state)
    if state.forwarder:
        await state.forwarder.stop()
    if state.inbox:
        await state.inbox.stop()
    if state.client:
        await broker.release(state.client)
