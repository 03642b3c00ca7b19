"""A durable reader of ``BW_EVENTS``: the loop the audit and analytics services share.

Lean nats-py rather than FastStream: the services store a whole fetched batch in one transaction and
acknowledge its messages only after that commit, which is one fsync per batch instead of one per event;
FastStream's handler-per-message model (or its batch mode with its own ack rules) would add a layer between
the commit and the ack without saving any code. The consumer is durable with ``DeliverPolicy.ALL``: a new one
reads the stream from its first event (backfill), a restarted service resumes where its acks left off, and
whatever is redelivered is made harmless by the stores' idempotence (``event_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from backworks.contracts.names import EVENTS_STREAM, EVENTS_SUBJECTS
from backworks.pipeline import broker
from backworks.pipeline.servicemetrics import SubscriberMetrics
from backworks.tap.auditstore import Incoming

log = structlog.get_logger("backworks.tap")

FETCH_BATCH = 256
FETCH_WAIT = 1.0
"""Seconds one pull waits for events before the loop looks at its stop signal again."""
ACK_WAIT = 30.0
"""Seconds a fetched batch may take to be stored before JetStream delivers it again."""
RETRY_DELAY = 1.0
PENDING_EVERY_S = 5.0
"""Seconds between two readings of the consumer's backlog for the metrics (only with ``--metrics-port``)."""

Store = Callable[[Sequence[Incoming]], Awaitable[None]]


def incoming(msg: Msg) -> Incoming:
    """The event of ``msg`` (an unreadable one is kept as its text: an audit trail does not drop it)."""
    try:
        event = json.loads(msg.data)
        if not isinstance(event, dict):
            raise ValueError("not an object")
    except ValueError:
        event = {"unreadable": msg.data.decode("utf-8", errors="replace")}
    sequence = msg.metadata.sequence.stream if msg.reply else None
    return Incoming(subject=msg.subject, stream_seq=sequence, event=event)


async def consume(
    client: Client,
    durable: str,
    store: Store,
    stop: asyncio.Event,
    *,
    replay: bool = False,
    metrics: SubscriberMetrics | None = None,
) -> None:
    """Feed every event of ``BW_EVENTS`` to ``store`` in batches, acknowledging each batch after it is stored,
    until ``stop`` is set. ``replay`` deletes the durable first: the stream is read again from its start (what a
    service that keeps its state in memory needs after a restart). ``metrics`` counts what it does."""
    js = broker.jetstream(client, timeout=5.0)
    await broker.attach(js, EVENTS_STREAM)
    if replay:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, durable)
    config = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_ack_pending=FETCH_BATCH * 4,
    )
    subscription = await js.pull_subscribe(EVENTS_SUBJECTS, durable, stream=EVENTS_STREAM, config=config)
    log.info("reading events", stream=EVENTS_STREAM, durable=durable)
    backlog_read = 0.0
    while not stop.is_set():
        if metrics is not None and time.monotonic() - backlog_read > PENDING_EVERY_S:
            backlog_read = time.monotonic()
            with contextlib.suppress(Exception):  # a missed reading leaves the last one
                metrics.pending.set((await subscription.consumer_info()).num_pending or 0)
        try:
            messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT)
        except (TimeoutError, NatsTimeoutError):
            continue
        except Exception as exc:
            log.warning("fetching events failed; retrying", error=repr(exc))
            if metrics is not None:
                metrics.failures.labels("fetch").inc()
            await asyncio.sleep(RETRY_DELAY)
            continue
        if not messages:
            continue
        started = time.perf_counter()
        try:
            await store([incoming(msg) for msg in messages])
        except Exception as exc:
            if metrics is not None:
                metrics.failures.labels("store").inc()
            # Not acknowledged: JetStream delivers them again after ACK_WAIT.
            log.error("storing events failed; they will be delivered again", count=len(messages), error=repr(exc))
            await asyncio.sleep(RETRY_DELAY)
            continue
        if metrics is not None:
            metrics.batches.observe(time.perf_counter() - started)
            metrics.events.inc(len(messages))
        for msg in messages:
            await msg.ack()
    await subscription.unsubscribe()
