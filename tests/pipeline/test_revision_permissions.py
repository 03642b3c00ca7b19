"""Who may touch revisions: every service reads and follows ``bw_config`` and answers the probe; only admin writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from backworks.contracts.names import CONFIG_BUCKET, CONFIG_CURRENT_KEY
from backworks.contracts.revision import ProbeAnswer
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import blueprints, broker
from backworks.pipeline.fleetprobe import ask
from backworks.pipeline.permissions import GATEWAY, TAP, base_identities, identities, stage_identity, widened
from backworks.pipeline.revisions import RevisionStore
from backworks.pipeline.stagehost import StageHost
from tests.files import write_blueprint
from tests.pipeline.test_broker_permissions import connected_as
from tests.waiting import eventually

ONE = """name: api
endpoints:
  hello: {path: /hello, handler: {type: mock, config: {body: one}}}
"""


@pytest.mark.parametrize("identity", [GATEWAY, stage_identity("hello-handler")])
async def test_services_read_revisions_but_cannot_store_them(
    identity: str, tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, ONE))
    await (await RevisionStore.open(broker.jetstream(nats_client))).store(loaded)
    nats_server.admit(identities(loaded).values())
    async with connected_as(nats_server, identity) as connection:
        store = await RevisionStore.open(broker.jetstream(connection.client))
        current = await store.current()
        assert current is not None and current.number == 1
        kv = await broker.jetstream(connection.client, timeout=0.5).key_value(CONFIG_BUCKET)
        with pytest.raises(NatsTimeout):  # the broker drops the refused publish: no acknowledgement comes
            await kv.put(CONFIG_CURRENT_KEY, b'{"revision": 7}')
        await eventually(connection.refused)
    admin = await RevisionStore.open(broker.jetstream(nats_client))
    number, _ = await admin.current_number()
    assert number == 1, "the refused write changed nothing"


async def test_a_replica_connected_as_itself_answers_the_probe(
    tmp_path: Path, nats_server: EmbeddedNats, nats_client: Client
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, ONE))
    await (await RevisionStore.open(broker.jetstream(nats_client))).store(loaded)
    nats_server.admit(identities(loaded).values())
    async with connected_as(nats_server, stage_identity("hello-handler")) as connection:
        host = StageHost(loaded.instances["hello-handler"], connection.client, revision=1)
        await host.start()
        try:
            candidate = {"blueprint": loaded.data, "source": str(loaded.path)}
            # What is proven is the right to hear the probe and to answer it, not how soon after its SUB a
            # subscription is routed to: ask until the replica is heard (a refusal would never be).
            heard: list[ProbeAnswer] = []

            async def answered() -> bool:
                heard[:] = await ask(nats_client, candidate, window=1.0)
                return bool(heard)

            await eventually(answered, timeout=30)
            (answer,) = heard
        finally:
            await host.stop()
    assert (answer.role, answer.name, answer.revision, answer.problems) == ("stage", "hello-handler", 1, [])
    assert answer.plugins == {"mock": loaded.instances["hello-handler"].cls.version}
    assert not connection.refused()


def test_widening_keeps_what_a_newer_revision_granted(tmp_path: Path) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, ONE))
    gateway = identities(loaded)[GATEWAY]
    recorded = {"publish": ["bw.stage.news-handler.request", *gateway.permissions.publish], "subscribe": []}
    wider = widened(gateway, recorded)
    assert "bw.stage.news-handler.request" in wider.permissions.publish
    assert set(gateway.permissions.publish) <= set(wider.permissions.publish)
    assert wider.permissions.subscribe == gateway.permissions.subscribe
    assert widened(gateway, None) is gateway


def test_widening_keeps_the_right_to_answer_requests(tmp_path: Path) -> None:
    tap = base_identities()[TAP]
    assert tap.permissions.responses, "analytics answers report requests"
    wider = widened(tap, {"publish": list(tap.permissions.publish), "subscribe": list(tap.permissions.subscribe)})
    assert wider.permissions.responses and wider.as_dict()["allow_responses"] is True
    gateway = identities(blueprints.load(write_blueprint(tmp_path, ONE)))[GATEWAY]
    assert not widened(gateway, {"publish": [], "subscribe": []}).permissions.responses
    assert widened(gateway, {"publish": [], "subscribe": [], "allow_responses": True}).permissions.responses
