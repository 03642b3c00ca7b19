"""Backpressure per stage: how much work waits for each stage's durable consumer, polled by the gateway.

Every ``POLL_INTERVAL_S`` (never per request) the gateway asks JetStream, per stage of its itineraries:

* ``CONSUMER.INFO`` of the stage's durable: ``num_pending`` (in the stream, not yet delivered to any replica),
  ``num_ack_pending`` (delivered, not yet acknowledged: being worked on, or held by a frozen replica),
  ``num_redelivered`` (of those, delivered more than once) and ``delivered`` (a counter: its delta is the rate);
* only when something waits: the oldest message still waiting for the stage, with ``STREAM.MSG.GET`` asking for
  the first message on the stage's subject after the consumer's ack floor (``next_by_subj``). ``BW_PIPELINE`` is a
  work queue, so an acknowledged message is gone: that first message is the oldest one not done, and its stream
  timestamp gives the "oldest pending age". One request per busy stage per poll; nothing for an idle one.

Health (``stages.<label>.backpressure``) and the Prometheus gauges read the last poll; a stage whose figures could
not be read is absent from it (and ``errors`` says why), never shown as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass

import structlog
from nats.js import JetStreamContext

from backworks.contracts.names import DLQ_STREAM, PIPELINE_STREAM, stage_durable, stage_subject
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.backpressure")

POLL_INTERVAL_S = 2.0
"""Seconds between two polls of every stage's consumer."""
PROBE_TIMEOUT_S = 1.0
"""Seconds one consumer-info or message-get request of a poll may take."""


@dataclass(frozen=True)
class StageLoad:
    """What waits for one stage, as of ``polled_at``."""

    pending: int
    """Messages in the stream not yet delivered to any replica."""
    ack_pending: int
    """Messages delivered to a replica and not yet acknowledged."""
    redelivered: int
    """Of the unacknowledged messages, those delivered more than once (a replica died, hung or nak'ed)."""
    oldest_pending_age_s: float | None
    """Age of the oldest message not yet acknowledged (None: nothing waits)."""
    delivered: int
    """Deliveries so far (a counter since the consumer was created: its rate is the stage's throughput)."""
    polled_at: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    """Where one stage's figures are read: its durable and its subject."""

    durable: str
    subject: str


def probes(loaded: LoadedBlueprint) -> dict[str, Probe]:
    """Every stage of the blueprint's itineraries, by label (``<instance>.<phase>``)."""
    found: dict[str, Probe] = {}
    for endpoint in loaded.model.endpoints:
        for stage in loaded.itinerary(endpoint):
            found[stage.label] = Probe(
                stage_durable(stage.instance, stage.phase), stage_subject(stage.instance, stage.phase)
            )
    return found


async def read_load(js: JetStreamContext, probe: Probe) -> StageLoad:
    """One stage's figures (raises what JetStream raised, e.g. ``NotFoundError`` before its first replica)."""
    info = await js.consumer_info(PIPELINE_STREAM, probe.durable, timeout=PROBE_TIMEOUT_S)
    pending, acking = int(info.num_pending or 0), int(info.num_ack_pending or 0)
    now = time.time()
    age = None
    if pending or acking:
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        oldest = await asyncio.wait_for(
            js.get_msg(PIPELINE_STREAM, seq=floor + 1, subject=probe.subject, next=True), PROBE_TIMEOUT_S
        )
        if oldest.time is not None:
            age = round(max(0.0, now - oldest.time.timestamp()), 3)
    delivered = int(info.delivered.consumer_seq or 0) if info.delivered else 0
    return StageLoad(pending, acking, int(info.num_redelivered or 0), age, delivered, now)


class BackpressureWatch:
    """Polls every stage's consumer (and the dead-letter count) in the background; readers take the last poll."""

    def __init__(self, js: JetStreamContext, loaded: LoadedBlueprint, interval: float | None = None) -> None:
        self.js = js
        self.probes = probes(loaded)
        self.interval = POLL_INTERVAL_S if interval is None else interval
        self.loads: dict[str, StageLoad] = {}
        self.errors: dict[str, str] = {}
        """Stages whose figures the last poll could not read, and why."""
        self.dead_letters: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Poll once (so health and metrics have figures from the start), then every ``interval`` seconds."""
        await self.poll()
        self._task = asyncio.create_task(self._run(), name="backpressure-poll")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception as exc:  # a poll never ends the watch: the next one may work
                log.warning("backpressure poll failed", error=repr(exc))

    async def poll(self) -> None:
        labels = list(self.probes)
        found = await asyncio.gather(
            *(read_load(self.js, self.probes[label]) for label in labels), return_exceptions=True
        )
        loads: dict[str, StageLoad] = {}
        errors: dict[str, str] = {}
        for label, result in zip(labels, found, strict=True):
            if isinstance(result, StageLoad):
                loads[label] = result
            else:
                errors[label] = repr(result)
        self.loads, self.errors = loads, errors
        self.dead_letters = None
        with contextlib.suppress(Exception):
            info = await asyncio.wait_for(self.js.stream_info(DLQ_STREAM), PROBE_TIMEOUT_S)
            self.dead_letters = int(info.state.messages)

    def report(self, label: str) -> dict[str, float | int | None] | None:
        """Health's ``backpressure`` of one stage: the last poll's figures, or None when they could not be read."""
        load = self.loads.get(label)
        return load.as_dict() if load is not None else None
