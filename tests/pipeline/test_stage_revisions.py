"""A stage replica serves each envelope with the config of the blueprint revision the envelope names."""

from __future__ import annotations

import time
from pathlib import Path

from nats.aio.client import Client

from backworks.contracts.envelope import Envelope
from backworks.pipeline import blueprints, broker
from backworks.pipeline.blueprints import LoadedBlueprint
from backworks.pipeline.revisions import RevisionStore
from backworks.pipeline.stagehost import StageHost
from tests.files import write_blueprint
from tests.pipeline.test_stagehost import send
from tests.replies import Replies
from tests.waiting import eventually

BLUEPRINT = """name: api
endpoints:
  hello: {{path: /hello, handler: {{type: mock, config: {{body: "{body}"}}}}}}
"""


def blueprint(tmp_path: Path, body: str) -> LoadedBlueprint:
    return blueprints.load(write_blueprint(tmp_path, BLUEPRINT.format(body=body), f"{body}.yaml"))


def envelope(loaded: LoadedBlueprint, revision: int | None, reply: str) -> Envelope:
    return Envelope(route="hello", method="GET", path="/hello", deadline=time.time() + 5, reply_to=reply,
                    itinerary=loaded.itinerary("hello"), revision=revision)  # fmt: skip


async def test_each_envelope_runs_with_its_revisions_config(
    tmp_path: Path, nats_client: Client, replies: Replies
) -> None:
    store = await RevisionStore.open(broker.jetstream(nats_client))
    one = blueprint(tmp_path, "one")
    await store.store(one)
    host = StageHost(one.instances["hello-handler"], nats_client, revision=1)
    await host.start()
    try:
        await store.store(blueprint(tmp_path, "two"))
        await eventually(lambda: host.versions.revision == 2)
        assert len(host.versions.plugins()) == 2, "the changed config was built when the revision arrived"

        for index, revision in enumerate((1, 2, None, 1)):
            await send(nats_client, envelope(one, revision, f"_INBOX.test.{index}"))
            done = await replies.next()
            served = done.response.body if done.response else b""
            assert served == (b"two" if revision == 2 else b"one"), (revision, done.errors)

        # Revisions beyond the kept ones retire the first config; an envelope of revision 1 is served after reading it
        # from bw_config again.
        for body in ("three", "four", "five", "six", "seven"):
            await store.store(blueprint(tmp_path, body))
        await eventually(lambda: host.versions.revision == 7)
        await host.versions.closed()
        assert host.versions.start.retired
        assert host.versions.start.plugin not in host.versions.plugins(), "a retired config's plugin is shut down"
        assert len(host.versions.plugins()) == 5
        await send(nats_client, envelope(one, 1, "_INBOX.test.old"))
        old = await replies.next()
        assert old.response is not None and old.response.body == b"one"

        # A revision that is not in the bucket fails the request and says why.
        await send(nats_client, envelope(one, 99, "_INBOX.test.gone"))
        gone = await replies.next()
    finally:
        await host.stop()
    assert gone.response is None
    (error,) = gone.errors
    assert error.stage == "hello-handler.request" and not error.skipped
    assert (
        error.message
        == "cannot serve blueprint revision 99: revision 99 is not in bw_config (never stored, or deleted)"
    )
