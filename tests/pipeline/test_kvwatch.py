"""Following a KV bucket: current values, then changes, and still after the broker restarts."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js.kv import KeyValue

from backworks.contracts.names import SPLITS_BUCKET
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import broker, kvwatch
from backworks.pipeline.tasks import cancel
from tests.waiting import eventually


async def test_a_follower_sees_current_values_changes_and_writes_made_after_a_broker_restart(
    nats_server: EmbeddedNats,
) -> None:
    owner = await broker.connect([nats_server.url], name="owner")
    await broker.declare(broker.jetstream(owner), storage="file")  # survives the restart
    kv = await broker.jetstream(owner).key_value(SPLITS_BUCKET)
    await kv.put("e.before", b"1")
    follower = await broker.connect([nats_server.url], name="follower")
    seen: dict[str, bytes | None] = {}
    ready = asyncio.Event()

    def on_entry(entry: KeyValue.Entry) -> None:
        seen[entry.key] = None if entry.operation in ("DEL", "PURGE") else entry.value

    task = asyncio.create_task(
        kvwatch.follow(follower, broker.jetstream(follower), SPLITS_BUCKET, on_entry, what="test", on_ready=ready.set)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert seen == {"e.before": b"1"}, "the current values come first"
        await kv.put("e.during", b"2")
        await eventually(lambda: seen.get("e.during") == b"2")

        nats_server.stop()
        nats_server.start()

        async def back() -> bool:
            try:
                await (await broker.jetstream(owner, timeout=0.5).key_value(SPLITS_BUCKET)).put("e.after", b"3")
            except Exception:
                return False
            return follower.is_connected

        await eventually(back, timeout=15.0)
        await kv.delete("e.before")
        # nats-py's watch alone goes silent after a restart: these arrive only through the rebuilt one.
        await eventually(lambda: seen.get("e.after") == b"3" and seen.get("e.before", b"") is None, timeout=10.0)
    finally:
        await cancel(task)
        for client in (follower, owner):
            await client.close()


async def test_keys_lists_every_key_with_a_message_and_nothing_for_an_empty_bucket(nats_client: Client) -> None:
    js = broker.jetstream(nats_client)
    assert await kvwatch.keys(js, SPLITS_BUCKET) == []
    kv = await js.key_value(SPLITS_BUCKET)
    for key in ("e.b", "e.a", "f.c"):
        await kv.put(key, b"1")
    await kv.delete("f.c")
    for _ in range(20):  # nats-py's own listing said "no keys" now and then on a loaded machine; this one never
        assert await kvwatch.keys(js, SPLITS_BUCKET) == ["e.a", "e.b", "f.c"], "a deleted key keeps its marker"
