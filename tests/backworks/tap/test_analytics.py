"""The analytics service against a real nats-server: it replays the stream, answers reports on
``bw.tap.report``, and emits an alert event when a rule starts firing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client

from backworks.contracts.events import RequestResponded
from backworks.contracts.names import REQUEST_RESPONDED_SUBJECT
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.events import EventPublisher
from backworks.tap import analytics
from backworks.tap.analytics import AnalyticsService
from backworks.tap.reports import AnalyticsUnavailable, ask
from tests.events import stream_events
from tests.files import write_blueprint
from tests.waiting import eventually

BLUEPRINT = """
name: watched
alerts:
  - {name: notes-errors, route: notes, error_rate_above: 20, window_s: 60}
endpoints:
  notes:
    path: /notes
    handler: {type: mock}
"""


def responded(status: int) -> RequestResponded:
    return RequestResponded(request_id="r", route="notes", method="GET", path="/notes", status=status, total_ms=4.0,
                            consumer="alice")  # fmt: skip


async def test_reports_and_alerts_from_events_already_on_the_stream(
    nats_client: Client, nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analytics, "ALERT_INTERVAL_S", 0.2)
    with pytest.raises(AnalyticsUnavailable):
        await ask(nats_client, 60, timeout=0.5)
    publisher = EventPublisher(nats_client)
    await publisher.start()
    for status in [200] * 6 + [500] * 3 + [404]:
        publisher.emit(REQUEST_RESPONDED_SUBJECT, responded(status))
    await eventually(lambda: publisher.confirmed == 10)
    await publisher.stop()

    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    stop = asyncio.Event()
    service = asyncio.create_task(AnalyticsService(loaded).serve([nats_server.url], stop))
    try:

        async def counted() -> bool:
            try:
                report = await ask(nats_client, 900, timeout=0.5)
            except AnalyticsUnavailable:
                return False
            return bool(report["endpoints"].get("notes", {}).get("count") == 10)

        await eventually(counted, timeout=15)
        report = await ask(nats_client, 900)
        assert report["endpoints"]["notes"]["statuses"] == {"2xx": 6, "4xx": 1, "5xx": 3}
        assert report["endpoints"]["notes"]["error_rate"] == 0.3
        assert report["consumers"]["alice"]["count"] == 10

        async def alerted() -> bool:
            events = await stream_events(broker.jetstream(nats_client))
            return any(subject == "bw.evt.alert.firing" for subject, _ in events)

        await eventually(alerted, timeout=15)
    finally:
        stop.set()
        await asyncio.wait_for(service, 10)
    events = await stream_events(broker.jetstream(nats_client))
    (alert,) = [event for subject, event in events if subject.startswith("bw.evt.alert.")]
    assert (alert["rule"], alert["state"], alert["value"], alert["subject"]) == (
        "notes-errors",
        "firing",
        30.0,
        "notes",
    )
    assert alert["at"] <= time.time()
