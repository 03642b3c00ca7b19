"""Revisions in ``bw_config`` on a real nats-server: storing, reading, history, conflicts, following."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client

from backworks.contracts.names import CONFIG_BUCKET, CONFIG_CURRENT_KEY
from backworks.pipeline import blueprints, broker
from backworks.pipeline.errors import RevisionConflict, RevisionError
from backworks.pipeline.revisions import RevisionFollower, RevisionStore, adopt_or_store, load
from tests.files import write_blueprint
from tests.waiting import eventually

ONE = """name: api
endpoints:
  hello: {path: /hello, handler: {type: mock, config: {body: one}}}
"""
TWO = ONE.replace("body: one", "body: two")


async def test_revisions_are_numbered_current_moves_and_history_grows(tmp_path: Path, nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    store = await RevisionStore.open(js)
    assert await store.current() is None
    first, replaced = await store.store(blueprints.load(write_blueprint(tmp_path, ONE)), "start")
    assert (first.number, first.previous, replaced, first.summary) == (1, None, None, "first revision")
    second, replaced = await store.store(blueprints.load(write_blueprint(tmp_path, TWO, "two.yaml")), "body two")
    assert (second.number, second.previous) == (2, 1)
    assert replaced is not None and replaced.number == 1
    assert second.summary == "~1 instance"
    current = await store.current()
    assert current is not None and current.number == 2 and current.message == "body two"
    assert [r.number for r in await store.history()] == [1, 2]
    # A stored revision is the blueprint as written and loads again, from its own folder.
    again = load(await store.get(1))
    assert again.model.endpoints["hello"].handler.config == {"body": "one"}
    assert again.path == tmp_path / "blueprint.yaml"


async def test_a_missing_revision_says_so(nats_client: Client) -> None:
    store = await RevisionStore.open(broker.jetstream(nats_client))
    with pytest.raises(RevisionError, match="revision 7 is not in bw_config"):
        await store.get(7)


async def test_two_applies_racing_for_one_number_one_loses(tmp_path: Path, nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    store = await RevisionStore.open(js)
    await store.store(blueprints.load(write_blueprint(tmp_path, ONE)))
    loaded = blueprints.load(write_blueprint(tmp_path, TWO, "two.yaml"))
    # The other apply moved ``current`` between this one's read and its write.
    kv = await js.key_value(CONFIG_BUCKET)
    real = store.current_number

    async def stale() -> tuple[int | None, int]:
        number, sequence = await real()
        await kv.put(CONFIG_CURRENT_KEY, b'{"revision": 1}')
        return number, sequence

    store.current_number = stale  # type: ignore[method-assign]  # the race, made deterministic
    with pytest.raises(RevisionConflict, match="try again"):
        await store.store(loaded)
    store.current_number = real  # type: ignore[method-assign]
    number, _ = await store.current_number()
    assert number == 1


async def test_up_and_declare_store_the_starting_blueprint_once(tmp_path: Path, nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    path = write_blueprint(tmp_path, ONE)
    first, stored = await adopt_or_store(js, blueprints.load(path), "up")
    assert (first.number, stored) == (1, True)
    same, stored = await adopt_or_store(js, blueprints.load(path), "up again")
    assert (same.number, stored) == (1, False), "an unchanged blueprint is not a new revision"
    path.write_text(TWO)
    changed, stored = await adopt_or_store(js, blueprints.load(path), "up edited")
    assert (changed.number, stored, changed.summary) == (2, True, "~1 instance")


async def test_a_follower_sees_each_new_revision_once_in_order(tmp_path: Path, nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    store = await RevisionStore.open(js)
    await store.store(blueprints.load(write_blueprint(tmp_path, ONE)))
    seen: list[int] = []

    async def took(number: int) -> None:
        seen.append(number)

    follower = RevisionFollower(js, took, known=1)
    await follower.start()
    try:
        await asyncio.sleep(0.2)
        assert seen == [], "the revision it started with is not news"
        await store.store(blueprints.load(write_blueprint(tmp_path, TWO, "two.yaml")))
        await store.store(blueprints.load(write_blueprint(tmp_path, ONE, "three.yaml")))
        await eventually(lambda: seen == [2, 3])
    finally:
        await follower.stop()
