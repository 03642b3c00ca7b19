"""``backworks top``: what an operator looks at to decide what to scale, read straight from the broker.

Per stage (``<instance>.<phase>``) of the blueprint: live replicas (``bw_registry``), the durable consumer's
pending / ack-pending / redelivered messages and its delivery rate (``CONSUMER.INFO``: the change of ``delivered``
between two readings), p99 latency (the analytics service's report of the last ``P99_WINDOW_S``, when one runs)
and the breaker state (``bw_breakers``). Everything is read as the ``tap`` identity: figures, never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from rich.table import Table

from backworks.contracts.breakers import BreakerState, StateRecord, StoredState, state_key
from backworks.contracts.names import BREAKERS_BUCKET, PIPELINE_STREAM, stage_durable
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.liveness import LivenessView
from backworks.tap.reports import ask

PROBE_TIMEOUT_S = 2.0
LIVENESS_WAIT_S = 5.0
"""Seconds ``top`` waits for its registry watch to have seen every heartbeat before the first reading."""
P99_WINDOW_S = 60.0
"""The analytics window the p99 column covers."""
REPORT_TIMEOUT_S = 1.0


@dataclass
class StageRow:
    """One line of ``top``."""

    stage: str
    instance: str
    replicas: int
    pending: int | None
    ack_pending: int | None
    redelivered: int | None
    delivered: int | None
    rate: float | None
    """Messages per second delivered to the stage since the previous reading (None on the first)."""
    p99_ms: float | None
    breaker: str


class Top:
    """Readings of one blueprint's stages; :meth:`read` returns the rows, rates from the previous reading."""

    def __init__(self, loaded: LoadedBlueprint, client: Client, js: JetStreamContext) -> None:
        self.loaded = loaded
        self.client = client
        self.js = js
        self.liveness = LivenessView(js, check_servers=False)  # a count to show, no routing decision
        # Itinerary order (what a request goes through first comes first), then any stage no endpoint uses.
        labels = [stage.label for endpoint in loaded.model.endpoints for stage in loaded.itinerary(endpoint)]
        every = {
            f"{name}.{phase.value}": (name, stage_durable(name, phase))
            for name, instance in loaded.instances.items()
            for phase in instance.cls.phases
        }
        self.stages = {label: every[label] for label in dict.fromkeys(labels) if label in every}
        self.stages.update(every)
        self._last: dict[str, tuple[float, int]] = {}

    async def start(self) -> None:
        await self.liveness.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.liveness.ready.wait(), LIVENESS_WAIT_S)

    async def stop(self) -> None:
        await self.liveness.stop()

    async def read(self) -> list[StageRow]:
        consumers = await asyncio.gather(
            *(
                self.js.consumer_info(PIPELINE_STREAM, durable, timeout=PROBE_TIMEOUT_S)
                for _, durable in self.stages.values()
            ),
            return_exceptions=True,
        )
        p99 = await self._p99()
        breakers = await self._breakers()
        now = time.monotonic()
        rows = []
        for (label, (instance, _)), info in zip(self.stages.items(), consumers, strict=True):
            row = StageRow(label, instance, self.liveness.count(instance), None, None, None, None, None,
                           p99.get(instance), breakers.get(instance, BreakerState.CLOSED.value))  # fmt: skip
            if not isinstance(info, BaseException):
                row.pending, row.ack_pending = int(info.num_pending or 0), int(info.num_ack_pending or 0)
                row.redelivered = int(info.num_redelivered or 0)
                row.delivered = int(info.delivered.consumer_seq or 0) if info.delivered else 0
                previous = self._last.get(label)
                if previous is not None and now > previous[0]:
                    row.rate = round(max(0, row.delivered - previous[1]) / (now - previous[0]), 1)
                self._last[label] = (now, row.delivered)
            rows.append(row)
        return rows

    async def _p99(self) -> dict[str, float]:
        try:
            report = await ask(self.client, P99_WINDOW_S, timeout=REPORT_TIMEOUT_S)
        except Exception:
            return {}  # no analytics service: the column shows "-"
        rows: dict[str, Any] = report.get("instances") or {}
        return {name: row["p99_ms"] for name, row in rows.items() if row.get("p99_ms") is not None}

    async def _breakers(self) -> dict[str, str]:
        try:
            kv = await self.js.key_value(BREAKERS_BUCKET)
        except Exception:
            return {}
        found: dict[str, str] = {}
        for instance in self.loaded.instances:
            with contextlib.suppress(KeyNotFoundError, ValueError):
                entry = await kv.get(state_key(instance))
                record = StateRecord.model_validate_json(entry.value or b"")
                if record.state is StoredState.OPEN:
                    half_open = record.reset_at is not None and record.reset_at <= time.time()
                    found[instance] = (BreakerState.HALF_OPEN if half_open else BreakerState.OPEN).value
                else:
                    found[instance] = BreakerState.CLOSED.value
        return found


def as_json(rows: list[StageRow]) -> dict[str, Any]:
    return {"at": time.time(), "stages": {row.stage: asdict(row) for row in rows}}


def table(rows: list[StageRow], title: str) -> Table:
    shown = Table(title=title, title_justify="left")
    for column in ("stage", "replicas", "pending", "ack pending", "redelivered", "msgs/s", "p99 ms", "breaker"):
        shown.add_column(column, justify="left" if column in ("stage", "breaker") else "right")
    for row in rows:
        breaker = {"open": "[red]open[/]", "half-open": "[yellow]half-open[/]"}.get(row.breaker, row.breaker)
        replicas = f"[red]{row.replicas}[/]" if row.replicas == 0 else str(row.replicas)
        shown.add_row(
            row.stage, replicas, *(_figure(v) for v in (row.pending, row.ack_pending, row.redelivered, row.rate)),
            f"{row.p99_ms:.1f}" if row.p99_ms is not None else "-", breaker,
        )  # fmt: skip
    return shown


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
