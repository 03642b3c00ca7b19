"""Plugin KV stores: the NATS one against a real nats-server and the in-memory one behave alike."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from backworks.contracts.names import BREAKERS_BUCKET, CACHE_BUCKET, RATELIMIT_BUCKET
from backworks.pipeline import broker
from backworks.pipeline.contract import verify
from backworks.pipeline.errors import PluginContractError, StoreConflict, StoreNotBound
from backworks.pipeline.plugin import EmptyConfig
from backworks.pipeline.stores import (
    PAYLOAD_HEADROOM,
    Entry,
    KeyValueStore,
    MemoryRuntime,
    NatsRuntime,
    PluginRuntime,
    Watch,
    digest,
)
from backworks.sdk.harness import PluginHarness
from tests.samples import Passthrough


@pytest.fixture(params=["nats", "memory"])
def runtime(request: pytest.FixtureRequest) -> PluginRuntime:
    """Each test runs on both runtimes: they must behave alike."""
    if request.param == "memory":
        return MemoryRuntime()
    client: Client = request.getfixturevalue("nats_client")
    return NatsRuntime(client, broker.jetstream(client))


async def next_entry(watch: Watch) -> Entry:
    async with asyncio.timeout(5):
        return await anext(aiter(watch))


async def test_get_put_and_compare_and_set(runtime: PluginRuntime) -> None:
    store = await runtime.kv(RATELIMIT_BUCKET, "limit")
    assert await store.get("k") is None
    first = await store.update("k", b"1", last=0)
    with pytest.raises(StoreConflict):
        await store.update("k", b"again", last=0)  # 0: only when the key has no value
    second = await store.update("k", b"2", last=first)
    with pytest.raises(StoreConflict):
        await store.update("k", b"stale", last=first)
    found = await store.get("k")
    assert found is not None and (found.value, found.revision) == (b"2", second)
    assert await store.put("k", b"3") > second
    await store.delete("k")
    assert await store.get("k") is None
    assert await store.update("k", b"back", last=0), "a deleted key can be created again"


async def test_instances_do_not_see_each_others_keys(runtime: PluginRuntime) -> None:
    one: KeyValueStore = await runtime.kv(CACHE_BUCKET, "one")
    two: KeyValueStore = await runtime.kv(CACHE_BUCKET, "two")
    await one.put("k", b"one's")
    assert await two.get("k") is None
    other_bucket = await runtime.kv(RATELIMIT_BUCKET, "one")
    assert await other_bucket.get("k") is None


async def test_a_watch_gives_current_values_then_changes_of_its_instance_only(runtime: PluginRuntime) -> None:
    store = await runtime.kv(RATELIMIT_BUCKET, "limit")
    other = await runtime.kv(RATELIMIT_BUCKET, "other")
    await store.put("a", b"1")
    watch = await store.watch()
    try:
        assert (await next_entry(watch)).value == b"1"
        await other.put("a", b"not mine")
        revision = await store.put("b", b"2")
        seen = await next_entry(watch)
        assert (seen.key, seen.value, seen.revision) == ("b", b"2", revision)
    finally:
        await watch.stop()


async def test_keys_must_be_valid_and_plugins_only_get_plugin_buckets(runtime: PluginRuntime) -> None:
    store = await runtime.kv(CACHE_BUCKET, "cache")
    with pytest.raises(ValueError, match="digest"):
        await store.get("GET /items?x=1")
    assert await store.get(digest("GET", "/items?x=1")) is None
    with pytest.raises(ValueError, match="bw_cache"):
        await runtime.kv(BREAKERS_BUCKET, "cache")


async def test_the_nats_store_knows_the_broker_max_payload(nats_client: Client) -> None:
    store = await NatsRuntime(nats_client, broker.jetstream(nats_client)).kv(CACHE_BUCKET, "cache")
    assert store.max_value_bytes == nats_client.max_payload - PAYLOAD_HEADROOM


async def test_a_plugin_gets_its_store_from_the_runtime_it_was_bound_to() -> None:
    plugin = Passthrough(EmptyConfig(), instance="p")
    with pytest.raises(StoreNotBound, match=r"plugin\.bind"):
        await plugin.kv(CACHE_BUCKET)
    runtime = MemoryRuntime()
    plugin.bind(runtime)
    await (await plugin.kv(CACHE_BUCKET)).put("k", b"v")
    assert await (await runtime.kv(CACHE_BUCKET, "p")).get("k") is not None
    async with PluginHarness(Passthrough, instance="h") as harness:  # the harness binds an in-memory runtime
        assert await (await harness.plugin.kv(CACHE_BUCKET)).get("k") is None


def test_a_plugin_may_not_override_the_runtime_methods() -> None:
    class Sneaky(Passthrough):
        name = "sneaky"

        async def kv(self, bucket: str) -> KeyValueStore:
            raise NotImplementedError

    with pytest.raises(PluginContractError, match="do not override `kv`"):
        verify(Sneaky, "test")
