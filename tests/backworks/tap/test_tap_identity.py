"""The event-stream subscribers connect as the least-privilege ``tap`` identity, and it is all they need.

A real nats-server with its monitoring port: ``/connz?auth=true`` names the nkey each connection logged in
with, so the test sees which identity the audit and analytics services really use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from backworks.contracts.events import RequestResponded
from backworks.contracts.names import REQUEST_RESPONDED_SUBJECT, Phase, stage_subject
from backworks.local.embedded import EmbeddedNats
from backworks.local.ports import free_port
from backworks.pipeline import blueprints, broker
from backworks.pipeline.events import EventPublisher
from backworks.pipeline.permissions import ADMIN, TAP, identities
from backworks.tap import audit
from backworks.tap.analytics import serve as serve_analytics
from backworks.tap.auditstore import AuditStore
from backworks.tap.reports import ask
from tests.files import write_blueprint
from tests.waiting import eventually

BLUEPRINT = """
name: watched
audit: {store: audit.sqlite3}
endpoints:
  notes:
    path: /notes
    handler: {type: mock}
"""


@pytest.fixture
def monitored(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "jetstream", monitor_port=free_port(), log_file=tmp_path / "nats-server.log")
    with server:
        yield server


async def connections(server: EmbeddedNats) -> dict[str, str]:
    """Client name -> the nkey it authenticated with, from nats-server's monitoring endpoint."""
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (
            await http.get(f"http://127.0.0.1:{server.monitor_port}/connz", params={"auth": "true"})
        ).json()
    return {c.get("name", ""): c.get("nkey") or c.get("authorized_user", "") for c in body.get("connections") or []}


@contextlib.asynccontextmanager
async def running(*mains: Any) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(main(stop)) for main in mains]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


async def test_audit_and_analytics_read_the_stream_as_the_tap_and_the_tap_may_not_touch_the_pipeline(
    monitored: EmbeddedNats, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    monitored.admit(identities(loaded).values())
    admin = await broker.connect([monitored.url], name="test-admin", identity=ADMIN)
    await broker.declare(broker.jetstream(admin), storage="memory")
    publisher = EventPublisher(admin)
    await publisher.start()
    for status in (200, 200, 503):
        publisher.emit(
            REQUEST_RESPONDED_SUBJECT,
            RequestResponded(request_id="r", route="notes", method="GET", path="/notes", status=status, total_ms=3.0),
        )
    await eventually(lambda: publisher.confirmed == 3)
    await publisher.stop()
    servers = [monitored.url]
    tap_key = monitored.keyring.entries()[TAP]["public_key"]
    try:
        async with running(
            lambda stop: audit.serve(loaded, servers, stop), lambda stop: serve_analytics(loaded, servers, stop)
        ):
            store = AuditStore(audit.store_path(loaded))
            try:
                await eventually(lambda: store.count() == 3, timeout=20)
            finally:
                store.close()
            found = await connections(monitored)
            subscribers = {
                name: key for name, key in found.items() if name.startswith(("backworks-audit", "backworks-analytics"))
            }
            assert len(subscribers) == 2, found
            assert set(subscribers.values()) == {tap_key}

            # The report is asked and answered as the tap (allow_responses lets analytics answer the requester).
            asker = await broker.connect(servers, name="test-report", identity=TAP)
            try:
                report = await ask(asker, 600, timeout=5)
                assert report["endpoints"]["notes"]["statuses"] == {"2xx": 2, "5xx": 1}
            finally:
                await asker.close()
    finally:
        await admin.close()


async def test_the_tap_is_refused_the_pipeline_and_kv_writes(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    nats_server.admit(identities(loaded).values())
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    admin = await broker.connect([nats_server.url], name="test-admin", identity=ADMIN)
    await broker.declare(broker.jetstream(admin), storage="memory")
    tap = await nats.connect(servers=[nats_server.url], error_cb=on_error, **nats_server.auth(TAP).options())
    try:
        js = tap.jetstream(timeout=1)
        with pytest.raises(NatsTimeout):  # refused: the publish never reaches the stream, no PubAck comes
            await js.publish(stage_subject("notes-handler", Phase.REQUEST), b"{}")
        with pytest.raises(NatsTimeout):
            await js.publish("$KV.bw_breakers.notes-handler.state", b"{}")
        with pytest.raises(NatsTimeout):
            await js.publish("bw.evt.request.responded", b"{}")  # only alerts: it may not forge request events
        await eventually(lambda: sum("permissions violation" in e.lower() for e in errors) >= 3)
        assert (await broker.jetstream(admin).stream_info("BW_PIPELINE")).state.messages == 0
    finally:
        await tap.close()
        await admin.close()
