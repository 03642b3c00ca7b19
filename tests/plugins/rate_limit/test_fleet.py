"""The fleet-wide limit against a real nats-server: 3 replicas of the stage, 2 gateways, one budget."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from nats.aio.client import Client

from backworks.contracts.names import RATELIMIT_BUCKET
from backworks.gateway.endpoint import SKIPPED_HEADER
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from backworks.plugins.rate_limit import RateLimit
from tests.files import write_blueprint
from tests.serving import serving, wait_live
from tests.stages import running_stages

LIMIT = 100
SENT = 3 * LIMIT
IN_FLIGHT = 48

BLUEPRINT = f"""
name: fleet
plugins:
  limit: {{type: rate-limit, config: {{limit: {LIMIT}, window_s: 300, by: ip}}}}
endpoints:
  items:
    path: /items
    plugins: [limit]
    handler: {{type: mock, config: {{body: {{ok: true}}}}}}
"""


async def test_three_replicas_and_two_gateways_admit_the_limit_and_no_more(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def send(http: httpx.AsyncClient) -> httpx.Response:
        async with gate:
            return await http.get("/items")

    async with (
        running_stages(loaded, nats_client, replicas=3) as hosts,
        serving(loaded, nats_server) as (first, first_state),
        serving(loaded, nats_server) as (second, second_state),
    ):
        await wait_live(first_state, second_state, replicas={"limit": 3, "items-handler": 3})
        responses = await asyncio.gather(*(send(first if i % 2 else second) for i in range(SENT)))
        limiters = [host.plugin for host in hosts["limit"]]
        handled = sum(host.processed for host in hosts["items-handler"])
        requests_seen = [host.processed for host in hosts["limit"]]

    skipped = [r.headers[SKIPPED_HEADER] for r in responses if SKIPPED_HEADER in r.headers]
    assert skipped == [], "the limiter never failed open"
    assert [p.errors for p in limiters if isinstance(p, RateLimit)] == [0, 0, 0], "no decision ran out of time"
    statuses = [r.status_code for r in responses]
    allowed, refused = statuses.count(200), statuses.count(429)
    assert allowed + refused == SENT, f"unexpected statuses: {sorted(set(statuses))}"
    assert LIMIT <= allowed <= LIMIT * 1.02, f"{allowed} of {SENT} allowed with a limit of {LIMIT}"
    assert handled == allowed, "a refused request never reaches the handler"
    assert sum(1 for seen in requests_seen if seen) >= 2, f"the load was spread over the replicas: {requests_seen}"
    for response in responses:
        assert response.headers["ratelimit-limit"] == str(LIMIT)
        assert int(response.headers["ratelimit-remaining"]) <= LIMIT
        assert 0 < int(response.headers["ratelimit-reset"]) <= 315
        if response.status_code == 429:
            assert response.headers["content-type"] == "application/problem+json"
            assert json.loads(response.content)["status"] == 429
            assert 0 < int(response.headers["retry-after"]) <= 315
            assert response.headers["ratelimit-remaining"] == "0"
    writes = sum(p.budget.cas_writes for p in limiters if isinstance(p, RateLimit))
    conflicts = sum(p.budget.cas_conflicts for p in limiters if isinstance(p, RateLimit))
    assert writes < SENT / 3, f"compare-and-sets are per lease, not per request: {writes} for {SENT} requests"
    print(f"\nallowed {allowed}/{SENT} (limit {LIMIT}); CAS writes {writes}, conflicts {conflicts}; "
          f"messages per limiter replica {requests_seen}")  # fmt: skip

    # Once every replica gave its unused units back, the key counts exactly what was admitted.
    kv = await nats_client.jetstream().key_value(RATELIMIT_BUCKET)
    keys = await kv.keys()
    assert len(keys) == 1 and keys[0].startswith("limit.")
    counted = sum(n for _, n in json.loads((await kv.get(keys[0])).value or b"{}")["counts"])
    assert counted == allowed


OUTAGE_BLUEPRINT = """
name: outage
plugins:
  open: {type: rate-limit, config: {limit: 1, by: header, header: x-tenant}}
  closed: {type: rate-limit, critical: true, config: {limit: 1, by: header, header: x-tenant, on_error: deny}}
endpoints:
  lenient:
    path: /lenient
    plugins: [open]
    handler: {type: mock, config: {body: {ok: true}}}
  strict:
    path: /strict
    plugins: [closed]
    handler: {type: mock, config: {body: {ok: true}}}
"""


async def test_when_the_budget_is_unreachable_on_error_decides(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, OUTAGE_BLUEPRINT))
    async with running_stages(loaded, nats_client) as hosts, serving(loaded, nats_server) as (http, state):
        await wait_live(state, replicas=dict.fromkeys(loaded.instances, 1))
        for path in ("/lenient", "/strict"):
            assert (await http.get(path, headers={"x-tenant": "a"})).status_code == 200
            assert (await http.get(path, headers={"x-tenant": "a"})).status_code == 429
        await nats_client.jetstream().delete_key_value(RATELIMIT_BUCKET)  # the shared state is gone
        # A caller this replica knows nothing about needs the store: it cannot be reached.
        lenient = await http.get("/lenient", headers={"x-tenant": "b"})
        assert lenient.status_code == 200, lenient.text
        assert "ratelimit-limit" not in lenient.headers
        assert SKIPPED_HEADER not in lenient.headers, "the plugin let it through, not the executor skipping it"
        strict = await http.get("/strict", headers={"x-tenant": "b"})
        assert strict.status_code == 503, strict.text
        assert strict.headers["retry-after"] == "1"
        assert "on_error: deny" in strict.json()["detail"]
        for name in ("open", "closed"):
            limiter = hosts[name][0].plugin
            assert isinstance(limiter, RateLimit) and limiter.errors >= 1
