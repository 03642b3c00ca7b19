"""The gateway switches routes to a new blueprint revision without a restart; requests in flight keep theirs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.permissions import identities
from backworks.pipeline.revisions import RevisionStore
from tests.files import write_blueprint
from tests.serving import Gateway
from tests.stages import running_stages
from tests.waiting import eventually

ONE = """name: api
plugins:
  slow: {type: delay, config: {ms: 1000}}
endpoints:
  hello: {path: /hello, plugins: [slow], handler: {type: mock, config: {body: one}}}
  fast: {path: /fast, handler: {type: mock, config: {body: fast}}}
"""
TWO = """name: api
plugins:
  slow: {type: delay, config: {ms: 1000}}
endpoints:
  hello: {path: /hello, plugins: [slow], handler: {type: mock, config: {body: two}}}
  fast: {path: /fast, handler: {type: mock, config: {body: fast}}}
  news: {path: /news, handler: {type: mock, config: {body: news}}}
"""
THREE = ONE.replace("body: one", "body: three")


def load(tmp_path: Path, text: str, name: str) -> LoadedBlueprint:
    return blueprints.load(write_blueprint(tmp_path, text, name))


async def test_routes_switch_and_a_request_in_flight_finishes_under_its_revision(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client, gateway: Gateway
) -> None:
    store = await RevisionStore.open(broker.jetstream(nats_client))
    one, two, three = load(tmp_path, ONE, "one.yaml"), load(tmp_path, TWO, "two.yaml"), load(tmp_path, THREE, "3.yaml")
    await store.store(one)
    async with (
        running_stages(one, nats_client),
        running_stages(two, nats_client, only=["news-handler"]),
        gateway(one) as (http, state),
    ):
        await eventually(lambda: state.revision == 1)
        nats_server.admit(identities(two).values())  # what `backworks apply` does on the embedded broker
        assert (await http.get("/hello")).text == "one"
        assert (await http.get("/news")).status_code == 404

        in_flight = asyncio.create_task(http.get("/hello"))  # spends 1 s in `slow` before reaching its handler
        await asyncio.sleep(0.3)
        await store.store(two)
        await eventually(lambda: state.revision == 2)
        assert (await http.get("/hello")).text == "two", "started after the switch: the new revision"
        news = await http.get("/news")
        assert news.status_code == 200 and news.text == "news", "an added route is served"
        old = await in_flight
        assert old.status_code == 200 and old.text == "one", "its handler ran with the revision it started under"

        await store.store(three)
        await eventually(lambda: state.revision == 3)
        assert (await http.get("/news")).status_code == 404, "a removed route is gone"
        assert (await http.get("/hello")).text == "three"
        assert (await http.get("/fast")).text == "fast"
