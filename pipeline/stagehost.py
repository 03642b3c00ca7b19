"""The stage host: runs one replica of one plugin instance as a JetStream durable pull consumer.

For each message: read the envelope, drop it if its deadline passed (dead-letter it if it was a
redelivery: someone's work was lost), run the hook under its time limit (``executor``), move past the
next stages that cannot take work and publish the envelope on (``forwarder``, the same hand-off the
gateway uses), and only then ack. A failed hand-off is nak'ed with a growing delay, so it is retried rather
than lost. What happens to the message is decided once per message, as a ``Settlement`` (ack, nak with
delay, term), and applied at one site (``settlement.settle``). A hook allowed to
run longer than the ack deadline keeps its message with in-progress heartbeats. Nothing a plugin does
can stop the loop; a plugin that exhausts its memory makes the replica exit to be restarted.

Each envelope runs with the instance config of the blueprint revision it names (``Envelope.revision``): the host
follows ``bw_config`` and keeps the last few revisions' plugin objects (``versions``), so a changed config is
rebuilt while envelopes of the old revision finish with the old object.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from backworks.contracts.blueprint import BreakerSettings, NatsSettings
from backworks.contracts.envelope import Envelope, StageError
from backworks.contracts.names import PIPELINE_STREAM, Phase, stage_durable, stage_subject
from backworks.contracts.registry import ReplicaInfo
from backworks.contracts.revision import ProbeAnswer
from backworks.contracts.types import FailureKind
from backworks.pipeline import audit, broker, credentials, pins, secrets, serverprobe, tracing
from backworks.pipeline.blueprints import LoadedBlueprint, ResolvedInstance
from backworks.pipeline.breakers import FleetBreakers
from backworks.pipeline.consumer import PullConsumer
from backworks.pipeline.deadletters import bury, record_event
from backworks.pipeline.errors import RevisionError
from backworks.pipeline.executor import Outcome, execute
from backworks.pipeline.fleetprobe import ProbeResponder, problems_with
from backworks.pipeline.forwarder import Forwarder
from backworks.pipeline.lifecycle import freeze_startup_objects
from backworks.pipeline.liveness import Heartbeat, LivenessView
from backworks.pipeline.permissions import stage_identity
from backworks.pipeline.plugin import Category, Plugin
from backworks.pipeline.redelivery import HandedOff, Recent
from backworks.pipeline.revisions import RevisionFollower
from backworks.pipeline.servicemetrics import DEFAULT_METRICS_HOST, StageMetrics, serve_metrics
from backworks.pipeline.settlement import ACK, Nak, Settlement, Term, settle
from backworks.pipeline.stalls import CLAIMED, STALL_MARGIN, may_be_claimed
from backworks.pipeline.stores import NatsRuntime
from backworks.pipeline.versions import InstanceVersions, Version

if TYPE_CHECKING:
    from backworks.pipeline.otel import Tracing

log = structlog.get_logger("backworks.stage")

MIN_ACK_WAIT = 1.0
MAX_ACK_WAIT = 2.0
"""ack_wait = clamp(2 x timeout + 0.5 s): a killed replica's message moves on quickly; longer hooks heartbeat."""
PUBLISH_TIMEOUT = 1.0
DEFAULT_MAX_DELIVER = 3
DEFAULT_MAX_INFLIGHT = 64
UNSENT_KEPT = 1_000
"""Results kept per replica whose hand-off failed, until a redelivery hands them on."""
NAK_DELAY = 0.1
"""First retry delay of a failed hand-off; doubles with each delivery."""
OUT_OF_MEMORY_EXIT = 71
OUT_OF_FILES_EXIT = 73
EXHAUSTED_EXIT = {"memory": OUT_OF_MEMORY_EXIT, "open files": OUT_OF_FILES_EXIT}
"""Exit code of a replica whose plugin used up a resource of the process, by resource."""


def delivery_count(ack_subject: str) -> int:
    """Which delivery of the message this is, read from its ack subject.

    ``msg.metadata`` parses every token and builds a datetime (~3 µs); this reads the one number. Ack subjects
    are ``$JS.ACK.<stream>.<consumer>.<delivered>.…`` (9 tokens) or, with domain and account hash,
    ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.…`` (12 or more).
    """
    tokens = ack_subject.split(".")
    index = 4 if len(tokens) == 9 else 6
    try:
        return max(1, int(tokens[index]))
    except (IndexError, ValueError):
        return 1


def ack_wait_for(timeout: float) -> float:
    """JetStream ack deadline for a hook allowed ``timeout`` seconds (heartbeats cover longer hooks)."""
    return min(MAX_ACK_WAIT, max(MIN_ACK_WAIT, timeout * 2 + 0.5))


class StageHost:
    """One replica serving every phase of one plugin instance."""

    def __init__(
        self,
        instance: ResolvedInstance,
        client: Client,
        *,
        max_inflight: int | None = None,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        breaker_settings: dict[str, BreakerSettings] | None = None,
        forwarder: Forwarder | None = None,
        revision: int | None = None,
    ) -> None:
        """``forwarder``: one shared with other hosts of this process (co-located instances, ``colocation``),
        started and stopped by its owner; by default the host makes, starts and stops its own. ``revision``: the
        blueprint revision ``instance`` comes from (None: a file, no revision stored)."""
        pins.check(instance)  # a replica outside the instance's version pin never consumes
        self.instance = instance
        self.client = client
        self.js: JetStreamContext = broker.jetstream(client, timeout=PUBLISH_TIMEOUT)
        self.plugin: Plugin[Any] = instance.cls(instance.config, instance=instance.name)
        self.audits = self.plugin.category is Category.SECURITY
        """Security stages note decisions that this host publishes on the event stream (``pipeline.audit``)."""
        self.plugin.bind(NatsRuntime(client, self.js))
        self.versions = InstanceVersions(instance, self.plugin, revision, self._build)
        """The instance's config per recent revision: each envelope runs with the one its revision declares."""
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_inflight = max_inflight or instance.spec.limits.max_concurrent or DEFAULT_MAX_INFLIGHT
        self.max_deliver = max_deliver
        self.timeout = instance.timeout
        """Seconds one hook call may take (``ResolvedInstance.timeout`` computes it on every read)."""
        self.ack_wait = ack_wait_for(self.timeout)
        self.started_at = time.time()
        self.processed = 0
        self.failed = 0
        self.dropped: Counter[str] = Counter()
        """Envelopes ended here without a hand-off, per reason: in the heartbeat, so health shows them."""
        self.handed_off = HandedOff()
        """Messages this replica already handed on: a redelivered copy (its ack was lost) is not run again."""
        self.running: set[tuple[str, int]] = set()
        """Messages this replica is working on: a copy redelivered meanwhile is not run a second time."""
        self.unsent: Recent[tuple[Outcome, list[StageError]]] = Recent(UNSENT_KEPT)
        """Results whose hand-off failed (the broker was away): a redelivery hands them on without running again."""
        self.consumers: list[PullConsumer] = []
        self.heartbeat = Heartbeat(self.js, self.snapshot)
        # Breakers of this instance (admits its calls) and of every stage it may forward to.
        settings = breaker_settings or {instance.name: instance.spec.breaker}
        self.owns_forwarder = forwarder is None
        self.forwarder = forwarder or Forwarder(
            client, self.js, settings, self.replica, publish_timeout=PUBLISH_TIMEOUT, owned=frozenset({instance.name})
        )
        self.breakers: FleetBreakers = self.forwarder.breakers
        self.liveness: LivenessView = self.forwarder.liveness
        self.revisions = RevisionFollower(self.js, self._take_revision, revision)
        self.probe = ProbeResponder(client, self._answer_probe)
        self.exhausted = asyncio.Event()
        self.exhausted_resource = ""
        """What a plugin used up (``memory``, ``open files``): the replica exits to be restarted."""
        self.metrics: StageMetrics | None = None
        """Prometheus metrics, only with ``--metrics-port`` (``servicemetrics``)."""
        self.tracing: Tracing | None = None
        """The OTLP span exporter, only with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (``pipeline.tracing``)."""

    def consumer_config(self, phase: Phase) -> ConsumerConfig:
        durable = stage_durable(self.instance.name, phase)
        return ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=stage_subject(self.instance.name, phase),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=max(self.max_inflight * 4, 256),
            max_waiting=512,
        )

    def _build(self, item: ResolvedInstance) -> Plugin[Any]:
        plugin: Plugin[Any] = item.cls(item.config, instance=item.name)
        plugin.bind(NatsRuntime(self.client, self.js))
        return plugin

    async def _take_revision(self, number: int) -> None:
        await self.versions.adopt(number)

    def _learn(self, loaded: LoadedBlueprint) -> None:
        """A revision may add stages this replica hands envelopes to: its forwarder needs their breakers."""
        self.forwarder.know({name: item.spec.breaker for name, item in loaded.instances.items()})

    async def _answer_probe(self, candidate: dict[str, Any] | None) -> ProbeAnswer:
        return ProbeAnswer(
            role="stage",
            name=self.instance.name,
            replica=self.replica,
            revision=self.versions.revision,
            plugins={self.versions.latest.instance.cls.name: self.versions.latest.instance.cls.version},
            problems=problems_with(candidate),
        )

    async def start(self) -> None:
        await broker.attach(self.js)
        await self.plugin.startup()
        await self.versions.open(self.js, self._learn)
        if self.owns_forwarder:
            await self.forwarder.start()
        for phase in self.instance.cls.phases:
            consumer = PullConsumer(
                self.client,
                self.js,
                PIPELINE_STREAM,
                self.consumer_config(phase),
                self._handler(phase),
                self.max_inflight,
            )
            await consumer.start()
            self.consumers.append(consumer)
        await self.heartbeat.start()
        if self.versions.store is not None:
            await self.revisions.start()
            await self.probe.start()
        log.info(
            "stage ready",
            instance=self.instance.name,
            plugin=self.instance.cls.name,
            phases=[p.value for p in self.instance.cls.phases],
            replica=self.replica,
            ack_wait=self.ack_wait,
            max_inflight=self.max_inflight,
        )

    async def on_reconnect(self) -> None:
        for consumer in self.consumers:
            await consumer.reset()

    async def stop(self, *, drain: bool = False) -> None:
        """Stop serving; with ``drain`` (a replica process told to stop), run what the broker still sends first."""
        await self.probe.stop()
        await self.revisions.stop()
        await self.heartbeat.stop()
        await asyncio.gather(*(consumer.stop(wait_pull=drain) for consumer in self.consumers))
        if self.owns_forwarder:
            await self.forwarder.stop()
        await self.versions.closed()
        for plugin in self.versions.plugins():
            try:
                await plugin.shutdown()
            except Exception:
                log.exception("plugin shutdown failed", instance=self.instance.name)

    async def snapshot(self) -> ReplicaInfo:
        # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that lands as the hook returns,
        # and the heartbeat loop calling this would then outlive Heartbeat.stop (StageHost.stop hung on it).
        try:
            async with asyncio.timeout(self.instance.timeout):
                health = await self.plugin.health_check()
            status, message = health.status.value, health.message
        except Exception as exc:
            status, message = "unhealthy", f"health_check failed: {exc!r}"
        try:
            async with asyncio.timeout(self.instance.timeout):
                metrics = await self.plugin.get_metrics()
        except Exception:
            metrics = {}
        return ReplicaInfo(
            instance=self.instance.name,
            replica=self.replica,
            plugin=self.instance.cls.name,
            version=self.instance.cls.version,
            phases=list(self.instance.cls.phases),
            pid=os.getpid(),
            host=socket.gethostname(),
            server=serverprobe.address(self.client.connected_url),
            started_at=self.started_at,
            sent_at=time.time(),
            health=status,
            health_message=secrets.mask(message),
            inflight=sum(c.inflight for c in self.consumers),
            processed=self.processed,
            failed=self.failed,
            dropped=dict(self.dropped),
            events=self.forwarder.events.report(),
            metrics=metrics,
        )

    def _handler(self, phase: Phase) -> Any:
        async def handle(msg: Msg) -> None:
            await settle(msg, await self.decide(phase, msg))

        return handle

    def _keep_alive(self, msg: Msg) -> InProgress | None:
        """In-progress heartbeats for hooks allowed to run close to, or past, the ack deadline."""
        if self.timeout < self.ack_wait / 2:
            return None
        return InProgress(msg, self.ack_wait / 4)

    async def decide(self, phase: Phase, msg: Msg) -> Settlement:
        """Run this stage on one message and hand it on; returns what to tell JetStream about the message."""
        raw = msg.data
        try:
            envelope = Envelope.from_json(raw)
        except ValidationError as exc:
            log.error("unreadable envelope terminated", instance=self.instance.name, error=str(exc)[:500])
            self.dropped[FailureKind.INVALID.value] += 1
            return Term("unreadable envelope")
        # Each message runs in its own task (``PullConsumer``): the bindings live exactly as long as its work.
        structlog.contextvars.bind_contextvars(request_id=envelope.request_id, trace_id=envelope.trace_id)
        credentials.bind(envelope)  # no log line of this work shows the request's credentials
        stage = envelope.current
        if stage is None or stage.instance != self.instance.name or stage.phase is not phase:
            log.error("misrouted envelope terminated", instance=self.instance.name)
            self.dropped[FailureKind.INVALID.value] += 1
            return Term("misrouted envelope")
        attempt = delivery_count(msg.reply)
        key = (envelope.id, envelope.cursor)
        if key in self.handed_off:
            # The ack of the first delivery was lost (e.g. its consumer's leader died), or the stream holds a second
            # copy (a hand-off retried across a broker crash that lost its de-duplication state): the work is done.
            log.info("already handed on; acknowledged without running again", stage=stage.label, attempt=attempt)
            return ACK
        if may_be_claimed(msg.reply, self.timeout) and not await self._still_pending(msg):
            return self._claimed(stage.label, "before it ran")
        if envelope.remaining() <= 0:
            self.dropped[FailureKind.EXPIRED.value] += 1
            if attempt > 1 and await self._still_pending(msg):  # no replica finished it: that work must not vanish
                reason = f"deadline passed after {attempt} deliveries (a replica crashed, hung or was killed)"
                await bury(
                    self.client,
                    self.js,
                    self.forwarder.events,
                    envelope,
                    msg.subject,
                    attempt,
                    reason,
                    FailureKind.EXPIRED,
                )
            else:  # it waited in the stream past its deadline: the gateway answered 504; on record, not in the DLQ
                reason = "deadline passed while it waited for this stage; dropped (the client had its 504)"
                log.info("expired envelope dropped", stage=stage.label)
                record_event(
                    self.forwarder.events, envelope, envelope.fail_stage(FailureKind.EXPIRED, reason, skip=False)
                )
            return ACK
        if key in self.running:
            # Redelivered while this replica still works on it (its ack deadline passed while the broker was away):
            # that work settles the message; the copy is put back, not run a second time.
            log.info("a copy of a message still being worked on here; left to that work", stage=stage.label)
            return Nak(self.ack_wait)
        self.running.add(key)
        try:
            return await self._run(phase, msg, envelope, key, attempt)
        finally:
            self.running.discard(key)

    async def _run(self, phase: Phase, msg: Msg, envelope: Envelope, key: tuple[str, int], attempt: int) -> Settlement:
        """Run the hook (unless an earlier delivery ran it and only its hand-off failed) and hand on the result."""
        stage = envelope.current
        label = stage.label if stage is not None else "?"
        unsent = self.unsent.pop(key, None)
        if unsent is None:
            try:
                version = await self.versions.get(envelope.revision)
            except RevisionError as exc:
                return await self._refuse_revision(envelope, str(exc))
            outcome = await self._execute(phase, msg, envelope, attempt, version)
            if outcome is None:
                return self._claimed(label, "while it ran")  # frozen or starved: another replica had it again
            failures = [outcome.envelope.errors[-1]] if outcome.failure else []
        else:
            outcome, failures = unsent  # the hook ran on an earlier delivery: hand on that result, do not run again
        try:
            await self.forwarder.forward(outcome.envelope, on_retry=msg.in_progress, failures=failures)
        except Exception as exc:
            delay = NAK_DELAY * 2 ** (attempt - 1)
            log.warning("hand-off failed; will be redelivered", stage=label, error=repr(exc), delay=delay)
            self.unsent.add(key, (outcome, failures))
            return Nak(delay)
        self.handed_off.add(key)
        return ACK

    async def _execute(
        self, phase: Phase, msg: Msg, envelope: Envelope, attempt: int, version: Version
    ) -> Outcome | None:
        """Run the hook with the plugin object of the envelope's revision; None when this replica took so long
        (frozen) that a stall watch gave the envelope on."""
        keeper = self._keep_alive(msg)
        decided = audit.noted(envelope) if self.audits else 0
        began = time.monotonic()
        timeout = version.instance.timeout
        self.versions.begin(version)
        try:
            outcome = await execute(
                version.plugin, phase, msg.data, envelope, timeout, self.replica, attempt, self.breakers
            )
        finally:
            self.versions.end(version)
            if keeper is not None:
                keeper.cancel()
        self.processed += 1
        if time.monotonic() - began > timeout + STALL_MARGIN and not await self._still_pending(msg):
            return None
        if self.metrics is not None:
            self.metrics.ran(outcome)
        if self.tracing is not None:
            self.tracing.stage_done(msg, outcome, stage_durable(self.instance.name, phase))
        if self.audits and not outcome.failure:
            audit.publish_decisions(self.forwarder.events, outcome.envelope, decided)
        if outcome.failure:
            self.failed += 1
            if outcome.exhausted:
                self.exhausted_resource = outcome.exhausted
                self.exhausted.set()
        return outcome

    def _claimed(self, stage: str, when: str) -> Settlement:
        """A stall watch claimed the message back (and went on without this replica): drop this late copy."""
        self.dropped[CLAIMED] += 1
        log.info(f"claimed back by a stall watch {when}; dropped without a hand-off", stage=stage)
        return ACK

    async def _refuse_revision(self, envelope: Envelope, reason: str) -> Settlement:
        """An envelope of a revision this replica cannot serve: the request fails, saying which revision and why."""
        self.dropped[FailureKind.INVALID.value] += 1
        message = f"cannot serve blueprint revision {envelope.revision}: {reason}"
        error = envelope.fail_stage(FailureKind.INVALID, message, skip=False)
        try:
            await self.forwarder.forward(envelope, failures=[error])
        except Exception as exc:
            log.warning("refusal not handed on; will be redelivered", error=repr(exc))
            return Nak(NAK_DELAY)
        return ACK

    async def _still_pending(self, msg: Msg) -> bool:
        """Whether ``msg`` is still in the stream: a copy another replica acknowledged (or a forwarder claimed back,
        or the dead-letter watch buried) is gone, and this late copy of it is no dead letter."""
        try:
            await self.js.get_msg(PIPELINE_STREAM, msg.metadata.sequence.stream)
        except NotFoundError:
            return False
        return True


class InProgress:
    """Tells JetStream every ``interval`` seconds that a message is still being worked on, until cancelled."""

    def __init__(self, msg: Msg, interval: float) -> None:
        self.msg = msg
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.sent: set[asyncio.Task[None]] = set()
        self.handle = self.loop.call_later(interval, self._beat)

    def _beat(self) -> None:
        task = self.loop.create_task(self.msg.in_progress())
        self.sent.add(task)
        task.add_done_callback(self.sent.discard)
        self.handle = self.loop.call_later(self.interval, self._beat)

    def cancel(self) -> None:
        self.handle.cancel()


async def serve(
    instance: ResolvedInstance,
    servers: list[str],
    stop: asyncio.Event,
    settings: NatsSettings | None = None,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
    revision: int | None = None,
    **options: Any,
) -> int:
    """Run one replica until ``stop`` is set; returns the process exit code.

    It connects as the instance's own identity (``stage-<instance>``), with the blueprint's ``settings``. With
    ``metrics_port`` (0: any free port) its Prometheus metrics are served on ``metrics_host``.
    """
    pins.check(instance)  # before connecting: a replica of the wrong plugin version exits at once
    host: StageHost | None = None

    async def reconnected() -> None:
        if host is not None:
            await host.on_reconnect()

    client = await broker.connect(
        servers,
        name=f"backworks-serve-{instance.name}",
        identity=stage_identity(instance.name),
        settings=settings,
        on_reconnect=reconnected,
    )
    host = StageHost(instance, client, revision=revision, **options)
    host.tracing = tracing.start(f"backworks-{instance.name}", host.replica)
    stop_metrics = None
    if metrics_port is not None:
        host.metrics = StageMetrics(host)
        served = serve_metrics(host.metrics.registry, metrics_port, metrics_host)
        stop_metrics = served.stop
        log.info("metrics served", instance=instance.name, url=served.url)
    code = 0
    try:
        await host.start()
        freeze_startup_objects()
        exhausted = asyncio.ensure_future(host.exhausted.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exhausted, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if host.exhausted.is_set():
            resource = host.exhausted_resource
            log.error(f"plugin exhausted the replica's {resource}; exiting to be restarted", instance=instance.name)
            code = EXHAUSTED_EXIT.get(resource, OUT_OF_MEMORY_EXIT)
        exhausted.cancel()
        stopped.cancel()
    finally:
        await host.stop(drain=True)
        await broker.release(client)
        if stop_metrics is not None:
            stop_metrics()
        if host.tracing is not None:
            host.tracing.shutdown()  # flushes the spans still batched
    return code
