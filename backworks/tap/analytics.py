"""``backworks analytics serve``: rolling aggregates of the event stream, answered on request, and alerts.

The aggregates live in memory: at start the service replays ``BW_EVENTS`` from its first event (its durable
``bw-analytics`` is recreated), so a restart loses nothing the stream still holds, and events older than the
aggregates' retention only pass through. Reports are answered over core NATS request-reply on
``bw.tap.report`` (the gateway's ``/_backworks/report`` and ``backworks report`` ask): any window is computed
fresh from the minute buckets, and nothing is stored twice (a KV snapshot would fix one window and be stale by
its period).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import structlog
from nats.aio.msg import Msg

from backworks.contracts.names import ANALYTICS_DURABLE, DLQ_STREAM, REPORT_SUBJECT
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.liveness import LivenessView
from backworks.pipeline.permissions import TAP
from backworks.pipeline.servicemetrics import SubscriberMetrics
from backworks.pipeline.tasks import cancel
from backworks.tap.aggregates import RETENTION_S, Aggregates
from backworks.tap.alerts import AlertRules
from backworks.tap.auditstore import Incoming
from backworks.tap.subscriber import consume

log = structlog.get_logger("backworks.analytics")

DEFAULT_REPORT_SINCE_S = 900.0
ALERT_INTERVAL_S = 5.0
"""Seconds between evaluations of the alert rules."""


def parse_since(data: bytes) -> float:
    try:
        asked = json.loads(data or b"{}").get("since_s", DEFAULT_REPORT_SINCE_S)
        return min(max(float(asked), 1.0), RETENTION_S)
    except (ValueError, TypeError, AttributeError):
        return DEFAULT_REPORT_SINCE_S


class AnalyticsService:
    """Aggregates, the report responder and the alert loop of one blueprint."""

    def __init__(self, loaded: LoadedBlueprint) -> None:
        self.loaded = loaded
        self.aggregates = Aggregates()

    def store(self, batch: Sequence[Incoming]) -> None:
        for item in batch:
            self.aggregates.add(item.subject, item.event)

    def report(self, since_s: float) -> dict[str, Any]:
        return {"blueprint": self.loaded.model.name, "generated_at": time.time(), **self.aggregates.report(since_s)}

    async def serve(self, servers: list[str], stop: asyncio.Event, metrics: SubscriberMetrics | None = None) -> None:
        client = await broker.connect(
            servers, name="backworks-analytics", identity=TAP, settings=self.loaded.model.nats
        )
        js = broker.jetstream(client)
        events = EventPublisher(client)
        if metrics is not None:
            metrics.publisher = events
        liveness = LivenessView(js)
        rules = AlertRules(
            self.loaded.model.alerts, self.aggregates, events,
            live=lambda name: not liveness.absent(name), instances=sorted(self.loaded.instances),
        )  # fmt: skip

        async def answer(msg: Msg) -> None:
            await msg.respond(json.dumps(self.report(parse_since(msg.data))).encode())

        async def store(batch: Sequence[Incoming]) -> None:
            self.store(batch)

        async def alert_loop() -> None:
            while True:
                await asyncio.sleep(ALERT_INTERVAL_S)
                try:
                    if any(rule.dlq_growing for rule in rules.rules):
                        rules.note_dlq_size(int((await js.stream_info(DLQ_STREAM)).state.messages))
                    rules.evaluate()
                    self.aggregates.prune()
                except Exception as exc:
                    log.warning("alert evaluation failed", error=repr(exc))

        await events.start()
        await liveness.start()
        responder = await client.subscribe(REPORT_SUBJECT, cb=answer)
        alerting = asyncio.create_task(alert_loop(), name="alerts")
        log.info("analytics ready", report_subject=REPORT_SUBJECT, alert_rules=len(rules.rules))
        try:
            await consume(client, ANALYTICS_DURABLE, store, stop, replay=True, metrics=metrics)
        finally:
            await cancel(alerting)
            with contextlib.suppress(Exception):
                await responder.unsubscribe()
            await liveness.stop()
            await events.stop()
            await broker.release(client)


async def serve(
    loaded: LoadedBlueprint, servers: list[str], stop: asyncio.Event, metrics: SubscriberMetrics | None = None
) -> None:
    """``backworks analytics serve``: aggregate, answer reports and alert until ``stop`` is set."""
    await AnalyticsService(loaded).serve(servers, stop, metrics)
