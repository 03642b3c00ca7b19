"""The cache shared through NATS KV: stored by one replica behind one gateway, served by another behind another."""

from __future__ import annotations

from pathlib import Path

from nats.aio.client import Client

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints
from backworks.pipeline.stagehost import StageHost
from tests.files import write_blueprint
from tests.serving import serving, wait_live
from tests.stages import running_stages
from tests.waiting import eventually

BLUEPRINT = """
name: shared-cache
plugins:
  cache: {type: cache, config: {ttl_s: 60, vary: [accept]}}
endpoints:
  items:
    path: /items
    plugins: [cache]
    handler: {type: mock, config: {body: {page: "{query.page}"}}}
"""
HANDLER = "items-handler"


def stages_in(server_timing: str) -> list[str]:
    return [entry.split(";")[0].strip() for entry in server_timing.split(",")]


async def test_a_miss_through_one_gateway_is_a_hit_through_another_served_by_another_replica(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, BLUEPRINT))
    json_only = {"accept": "application/json"}
    async with (
        running_stages(loaded, nats_client, only=[HANDLER], replicas=3) as handlers,
        serving(loaded, nats_server) as (first, first_state),
        serving(loaded, nats_server) as (second, second_state),
    ):

        def handled() -> int:
            return sum(host.processed for host in handlers[HANDLER])

        async with running_stages(loaded, nats_client, only=["cache"]) as storing:
            await wait_live(first_state, second_state, replicas={"cache": 1, HANDLER: 3})
            miss = await first.get("/items?page=2", headers=json_only)
            stored_by = storing["cache"][0].replica
        assert miss.status_code == 200 and miss.json() == {"page": "2"}
        assert miss.headers["x-cache"] == "miss" and "age" not in miss.headers
        assert handled() == 1

        async with running_stages(loaded, nats_client, only=["cache"]) as serving_hosts:
            replica: StageHost = serving_hosts["cache"][0]
            assert replica.replica != stored_by

            def only_the_new_replica() -> bool:
                return all(
                    state.liveness is not None
                    and [r.replica for r in state.liveness.live("cache")] == [replica.replica]
                    for state in (first_state, second_state)
                )

            await eventually(only_the_new_replica)
            hit = await second.get("/items?page=2", headers=json_only)
            assert hit.status_code == 200 and hit.json() == {"page": "2"}
            assert hit.headers["x-cache"] == "hit"
            assert 0 <= int(hit.headers["age"]) <= 5
            assert HANDLER + ".request" not in stages_in(hit.headers["server-timing"])
            assert "cache.request" in stages_in(hit.headers["server-timing"])
            assert handled() == 1, "the hit never reached the handler"

            other = await second.get("/items?page=2", headers={"accept": "text/html"})
            assert other.headers["x-cache"] == "miss", "another value of a vary header is another entry"
            assert handled() == 2
            metrics = await replica.plugin.get_metrics()
            assert metrics["hits"] == 1 and metrics["stored"] == 1
