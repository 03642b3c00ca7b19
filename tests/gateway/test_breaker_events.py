"""Breaker transitions reach the event stream once each, fleet-wide, and the analytics report counts them.

Two replicas of a failing stage and the gateway all watch the same fleet breaker: each transition is written by
one of them (the CAS winner) and published once; ``/_backworks/report`` then shows it per plugin instance."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from backworks.contracts.events import BreakerTransition
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.tap.analytics import AnalyticsService
from tests.events import stream_events
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("allow_fault")  # the breaker is driven by the `fault` plugin

RESET_TIMEOUT = 2.0
BLUEPRINT = """name: breaker-events
plugins:
  flaky:
    type: fault
    critical: true
    breaker:
      sliding_window: {type: count, size: 4}
      minimum_calls: 4
      failure_rate: 50
      wait_in_open_ms: 2000
      permitted_calls_in_half_open: 1
endpoints:
  e: {path: /x, plugins: [flaky], handler: {type: mock, config: {body: ok}}}
"""
HISTORY = [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


async def transitions(client: Client) -> list[tuple[str, dict[str, Any]]]:
    events = await stream_events(broker.jetstream(client))
    return [(subject, event) for subject, event in events if subject.startswith("bw.evt.breaker.")]


async def test_each_transition_is_one_event_and_the_report_counts_it_per_instance(
    tmp_path: Path, gateway: Gateway, nats_client: Client, nats_server: EmbeddedNats
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    stop = asyncio.Event()
    analytics = asyncio.create_task(AnalyticsService(loaded).serve([nats_server.url], stop))
    try:
        async with running_stages(loaded, nats_client, replicas=2) as hosts, gateway(loaded) as (http, state):
            breakers = state.breakers
            assert breakers is not None
            for _ in range(4):
                failed = await http.get("/x", headers={"x-backworks-fault": "raise"})
                assert failed.status_code in (502, 503)  # 503 once the breaker opened under the last ones
            await eventually(lambda: breakers.state("flaky").value == "open")
            await eventually(lambda: breakers.state("flaky").value == "half-open", timeout=RESET_TIMEOUT * 3)
            probe = await http.get("/x")
            assert probe.status_code == 200
            await eventually(lambda: breakers.state("flaky").value == "closed")

            async def all_published() -> bool:
                return len(await transitions(nats_client)) >= len(HISTORY)

            await eventually(all_published, timeout=RESET_TIMEOUT * 3)
            # Every replica (and the gateway) saw every change; none of them published one twice.
            for fleet in [breakers, *(host.breakers for host in hosts["flaky"])]:
                assert fleet.state("flaky").value == "closed"
            published = await transitions(nats_client)
            events = [BreakerTransition.model_validate(event) for _, event in published]
            assert [(e.from_state.value, e.to_state.value) for e in events] == HISTORY
            assert [subject for subject, _ in published] == [f"bw.evt.breaker.{new}" for _, new in HISTORY]
            assert all(e.instance == "flaky" for e in events)
            assert "failure rate 100% of 4 calls" in events[0].reason and events[0].reset_at is not None
            assert events[1].replica == events[0].replica, "half-open is published by the writer of the open"
            assert events[2].generation == events[0].generation + 1

            rows: list[dict[str, Any]] = []

            async def reported() -> bool:
                answer = await http.get("/_backworks/report", params={"since": "15m"})
                found = answer.json().get("instances", {}).get("flaky") if answer.status_code == 200 else None
                row: dict[str, Any] = found or {}
                rows.append(row)
                return bool(sum(row.get("breaker_transitions", {}).values()) == len(HISTORY))

            await eventually(reported, timeout=15)
            row = rows[-1]
            assert row["breaker_transitions"] == {"closed": 1, "half-open": 1, "open": 1}
            assert row["last_transition"]["from"] == "half-open" and row["last_transition"]["to"] == "closed"
            assert row["last_transition"]["at"] == events[2].at
    finally:
        stop.set()
        await asyncio.wait_for(analytics, 10)
