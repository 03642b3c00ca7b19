"""The stage host: runs one replica of one plugin instance as a JetStream durable pull consumer.

For each message: read the envelope, drop it if its deadline has passed, run the hook (``executor``),
publish the result to the next stage with a ``Nats-Msg-Id`` (or, after the last stage, to the gateway's
reply subject), and only then ack. A failed publish is nak'ed with a delay, so the message is retried
rather than lost. Nothing a plugin does can stop the loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from contracts.envelope import Envelope
from contracts.names import MSG_ID_HEADER, PIPELINE_STREAM, Phase, message_id, stage_durable, stage_subject
from contracts.registry import ReplicaInfo
from pipeline import broker
from pipeline.blueprints import ResolvedInstance
from pipeline.consumer import PullConsumer
from pipeline.executor import execute
from pipeline.liveness import Heartbeat
from pipeline.plugin import Plugin

log = structlog.get_logger("backworks.stage")

MIN_ACK_WAIT = 2.0
ACK_WAIT_FACTOR = 3
"""ack_wait = max(MIN_ACK_WAIT, timeout * ACK_WAIT_FACTOR + PUBLISH_TIMEOUT): room for the hook and the hand-off."""
PUBLISH_TIMEOUT = 1.0
DEFAULT_MAX_DELIVER = 5
DEFAULT_MAX_INFLIGHT = 64
NAK_DELAY = 0.2


def ack_wait_for(timeout: float) -> float:
    """JetStream ack deadline for a hook allowed ``timeout`` seconds."""
    return max(MIN_ACK_WAIT, timeout * ACK_WAIT_FACTOR + PUBLISH_TIMEOUT)


class StageHost:
    """One replica serving every phase of one plugin instance."""

    def __init__(
        self,
        instance: ResolvedInstance,
        client: Client,
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_deliver: int = DEFAULT_MAX_DELIVER,
    ) -> None:
        self.instance = instance
        self.client = client
        self.js: JetStreamContext = broker.jetstream(client, timeout=PUBLISH_TIMEOUT)
        self.plugin: Plugin[Any] = instance.cls(instance.config, instance=instance.name)
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_inflight = max_inflight
        self.max_deliver = max_deliver
        self.started_at = time.time()
        self.processed = 0
        self.failed = 0
        self.consumers: list[PullConsumer] = []
        self.heartbeat = Heartbeat(self.js, self.snapshot)

    def consumer_config(self, phase: Phase) -> ConsumerConfig:
        durable = stage_durable(self.instance.name, phase)
        return ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=stage_subject(self.instance.name, phase),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_for(self.instance.timeout),
            max_deliver=self.max_deliver,
            max_ack_pending=max(self.max_inflight * 4, 256),
            max_waiting=512,
        )

    async def start(self) -> None:
        await broker.attach(self.js)
        await self.plugin.startup()
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
        log.info(
            "stage ready",
            instance=self.instance.name,
            plugin=self.instance.cls.name,
            phases=[p.value for p in self.instance.cls.phases],
            replica=self.replica,
        )

    async def on_reconnect(self) -> None:
        for consumer in self.consumers:
            await consumer.reset()

    async def stop(self) -> None:
        await self.heartbeat.stop()
        for consumer in self.consumers:
            await consumer.stop()
        try:
            await self.plugin.shutdown()
        except Exception:
            log.exception("plugin shutdown failed", instance=self.instance.name)

    async def snapshot(self) -> ReplicaInfo:
        try:
            health = await asyncio.wait_for(self.plugin.health_check(), timeout=self.instance.timeout)
            status, message = health.status.value, health.message
        except Exception as exc:
            status, message = "unhealthy", f"health_check failed: {exc!r}"
        try:
            metrics = await asyncio.wait_for(self.plugin.get_metrics(), timeout=self.instance.timeout)
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
            started_at=self.started_at,
            sent_at=time.time(),
            health=status,
            health_message=message,
            inflight=sum(c.inflight for c in self.consumers),
            processed=self.processed,
            failed=self.failed,
            metrics=metrics,
        )

    def _handler(self, phase: Phase) -> Any:
        async def handle(msg: Msg) -> None:
            await self.handle(phase, msg)

        return handle

    async def handle(self, phase: Phase, msg: Msg) -> None:
        raw = msg.data
        try:
            envelope = Envelope.from_json(raw)
        except ValidationError as exc:
            log.error("unreadable envelope terminated", instance=self.instance.name, error=str(exc)[:500])
            await msg.term()
            return
        stage = envelope.current
        if stage is None or stage.instance != self.instance.name or stage.phase is not phase:
            log.error("misrouted envelope terminated", instance=self.instance.name, request_id=envelope.request_id)
            await msg.term()
            return
        if envelope.remaining() <= 0:
            log.info("expired envelope dropped", stage=stage.label, request_id=envelope.request_id)
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered or 1
        outcome = await execute(self.plugin, phase, raw, envelope, self.instance.timeout, self.replica, attempt)
        self.processed += 1
        if outcome.failure:
            self.failed += 1
        try:
            await self.forward(outcome.envelope)
        except Exception as exc:
            log.warning("hand-off failed; will be redelivered", stage=stage.label, error=repr(exc))
            await msg.nak(delay=NAK_DELAY)
            return
        await msg.ack()

    async def forward(self, envelope: Envelope) -> None:
        """Publish to the next stage (JetStream, de-duplicated) or back to the gateway (core NATS)."""
        data = envelope.to_json()
        nxt = envelope.current
        if nxt is None:
            await self.client.publish(envelope.reply_to, data)
            return
        await self.js.publish(
            stage_subject(nxt.instance, nxt.phase),
            data,
            timeout=PUBLISH_TIMEOUT,
            headers={MSG_ID_HEADER: message_id(envelope.id, envelope.cursor)},
        )


async def serve(instance: ResolvedInstance, servers: list[str], stop: asyncio.Event, **options: Any) -> None:
    """Run one replica until ``stop`` is set."""
    host: StageHost | None = None

    async def reconnected() -> None:
        if host is not None:
            await host.on_reconnect()

    client = await broker.connect(servers, name=f"backworks-serve-{instance.name}", on_reconnect=reconnected)
    host = StageHost(instance, client, **options)
    try:
        await host.start()
        await stop.wait()
    finally:
        await host.stop()
        await client.drain()
