"""``backworks audit serve``: append every event of ``BW_EVENTS`` to the blueprint's audit store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import structlog

from backworks.local.state import state_dir
from backworks.pipeline import broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.permissions import TAP
from backworks.pipeline.servicemetrics import SubscriberMetrics
from backworks.tap.auditstore import AuditStore, Incoming
from backworks.tap.subscriber import consume

log = structlog.get_logger("backworks.audit")

DEFAULT_STORE_NAME = "audit.sqlite3"


def store_path(loaded: LoadedBlueprint) -> Path:
    """``audit.store`` (relative to the blueprint's folder), or ``<state dir>/audit.sqlite3``."""
    given = loaded.model.audit.store
    if given is None:
        return state_dir() / DEFAULT_STORE_NAME
    path = Path(given).expanduser()
    return path if path.is_absolute() else (loaded.path.parent / path).resolve()


async def serve(
    loaded: LoadedBlueprint, servers: list[str], stop: asyncio.Event, metrics: SubscriberMetrics | None = None
) -> None:
    """Read events with this store's durable consumer and append them until ``stop`` is set."""
    store = AuditStore(store_path(loaded))
    durable = store.durable()
    client = await broker.connect(servers, name=f"backworks-audit-{durable}", identity=TAP, settings=loaded.model.nats)

    async def append(batch: Sequence[Incoming]) -> None:
        added = await asyncio.to_thread(store.append, batch)  # SQLite's fsync off the loop: pings keep flowing
        if added:
            log.info("events recorded", added=added, skipped=len(batch) - added)

    try:
        log.info("audit store open", store=str(store.path), records=store.count())
        await consume(client, durable, append, stop, metrics=metrics)
    finally:
        await broker.release(client)
        store.close()
