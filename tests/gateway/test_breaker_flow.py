"""A critical plugin fails until its fleet-shared breaker opens; forwarders then refuse without calling it."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pytest
from nats.aio.client import Client

from backworks.pipeline import blueprints
from backworks.pipeline.breakers import FleetBreakers
from backworks.plugins.fault import Fault
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("allow_fault", "far_from_utc")  # breakers driven by the `fault` plugin, in UTC+9

# Every refusal below must land within the reset timeout (or a probe is let through): generous on a loaded machine.
RESET_TIMEOUT = 2.0
BLUEPRINT = """name: breakers
plugins:
  flaky:
    type: fault
    critical: {critical}
    breaker:
      sliding_window: {{type: count, size: 4}}
      minimum_calls: 4
      failure_rate: 50
      wait_in_open_ms: 2000
      permitted_calls_in_half_open: 1
endpoints:
  e: {{path: /x, plugins: [flaky], handler: {{type: mock, config: {{body: ok}}}}}}
"""


def calls_are(fleet: FleetBreakers, calls: int) -> bool:
    return fleet.snapshot()["flaky"]["calls"] == calls


async def test_breaker_opens_refuses_without_calling_then_half_open_probe_closes_it(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT.format(critical="true")))
    async with running_stages(loaded, nats_client) as hosts, gateway(loaded) as (http, state):
        plugin = hosts["flaky"][0].plugin
        assert isinstance(plugin, Fault)
        breakers = state.breakers
        assert breakers is not None
        stage_breakers = hosts["flaky"][0].breakers
        for _ in range(2):
            assert (await http.get("/x")).status_code == 200
        failed = await http.get("/x", headers={"x-backworks-fault": "raise"})
        assert failed.status_code == 502
        # 1 of 3 calls failed, below minimum_calls: both forwarders (gateway, stage host) show the same window.
        for fleet in (breakers, stage_breakers):
            await eventually(partial(calls_are, fleet, 3))
        health = (await http.get("/_backworks/health")).json()
        shown = health["stages"]["flaky.request"]["breaker"]
        assert (shown["state"], shown["calls"], shown["failure_rate"], shown["window"]) == (
            "closed",
            3,
            33.3,
            "count:4",
        )
        assert shown == stage_breakers.snapshot()["flaky"]
        failed = await http.get("/x", headers={"x-backworks-fault": "raise"})  # 2 of 4: 50 %
        assert failed.status_code == 502
        assert failed.json()["cause"] != "unavailable", "the tripping call answers with the plugin's own failure"
        await eventually(lambda: breakers.state("flaky").value == "open")
        calls = plugin.calls
        for _ in range(5):
            refused = await http.get("/x")
            assert refused.status_code == 503
            assert refused.json()["stage"] == "flaky.request"
            assert "circuit breaker open" in refused.json()["detail"]
        assert plugin.calls == calls, "an open breaker sends nothing to the plugin"
        health = (await http.get("/_backworks/health")).json()
        assert health["stages"]["flaky.request"]["breaker"]["state"] == "open"
        assert "failure rate 50% of 4 calls" in health["stages"]["flaky.request"]["breaker"]["reason"]
        assert health["status"] == "unhealthy"
        assert stage_breakers.state("flaky").value == "open"

        # A failed probe reopens it.
        await eventually(lambda: breakers.state("flaky").value == "half-open", timeout=RESET_TIMEOUT * 3)
        assert (await http.get("/x", headers={"x-backworks-fault": "raise"})).status_code == 502
        await eventually(lambda: breakers.state("flaky").value == "open")

        # A good probe closes it everywhere.
        await eventually(lambda: breakers.state("flaky").value == "half-open", timeout=RESET_TIMEOUT * 3)
        probe = await http.get("/x")
        assert probe.status_code == 200 and probe.text == "ok"
        await eventually(lambda: breakers.state("flaky").value == "closed")
        assert hosts["flaky"][0].breakers.state("flaky").value == "closed"
        assert (await http.get("/x")).status_code == 200


async def test_an_open_breaker_on_an_optional_stage_is_skipped(
    tmp_path: Path, gateway: Gateway, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT.format(critical="false")))
    async with running_stages(loaded, nats_client) as hosts, gateway(loaded) as (http, state):
        plugin = hosts["flaky"][0].plugin
        assert isinstance(plugin, Fault)
        breakers = state.breakers
        assert breakers is not None
        for _ in range(4):
            skipped = await http.get("/x", headers={"x-backworks-fault": "raise"})
            assert skipped.status_code == 200 and skipped.headers["x-backworks-skipped"] == "flaky.request"
        await eventually(lambda: breakers.state("flaky").value == "open")
        calls = plugin.calls
        responses = await asyncio.gather(*(http.get("/x") for _ in range(10)))
        assert all(r.status_code == 200 and r.headers["x-backworks-skipped"] == "flaky.request" for r in responses)
        assert plugin.calls == calls
