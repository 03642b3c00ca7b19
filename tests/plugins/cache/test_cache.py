"""The cache plugin through the SDK harness (in-memory KV): keys, Cache-Control, freshness, sizes."""

from __future__ import annotations

import time
from typing import Any

from backworks.contracts.envelope import Envelope, HttpResponse, Principal
from backworks.contracts.names import CACHE_BUCKET
from backworks.pipeline.plugin import Continue, Respond
from backworks.pipeline.stores import MemoryRuntime
from backworks.plugins.cache import Cache
from backworks.plugins.cache.config import CacheConfig
from backworks.plugins.cache.entries import Cached, cache_key, freshness
from backworks.sdk import factories
from backworks.sdk.harness import PluginHarness

Harness = PluginHarness[Cache]


def answer(body: bytes = b"fresh", status: int = 200, **headers: str) -> HttpResponse:
    response = HttpResponse(status=status, body=body)
    for name, value in headers.items():
        response.set_header(name.replace("_", "-"), value)
    return response


async def through(harness: Harness, request: Envelope, handler: HttpResponse | None = None) -> HttpResponse:
    """Both phases as the pipeline runs them; ``handler`` answers when the cache lets the request through."""
    action = await harness.request(request)
    if isinstance(action, Respond):
        envelope = request.model_copy(deep=True)
        envelope.annotations = {"cache": {"test": {"hit": True}}}  # what the hit annotated
        envelope.response = action.response
    else:
        assert isinstance(action, Continue)
        envelope = action.envelope
        envelope.response = handler or answer()
    done = await harness.response(envelope)
    assert isinstance(done, Continue) and done.envelope.response is not None
    return done.envelope.response


def get(path: str = "/items", **options: Any) -> Envelope:
    return factories.request("GET", path, **options)


async def test_a_miss_is_stored_and_the_next_request_is_a_hit_with_age() -> None:
    async with PluginHarness(Cache, {"ttl_s": 60}) as harness:
        first = await through(harness, get(), answer(b"v1", content_type="text/plain"))
        assert first.header("x-cache") == "miss" and first.body == b"v1"
        action = await harness.request(get())
        assert isinstance(action, Respond), "a hit answers in the request phase: the handler is skipped"
        hit = action.response
        assert hit.header("x-cache") == "hit"
        assert hit.body == b"v1" and hit.header("content-type") == "text/plain"
        assert hit.header("age") is not None and 0 <= int(hit.header("age") or -1) <= 2
        assert (await harness.metrics())["hits"] == 1


async def test_the_key_is_method_path_query_vary_headers_and_consumer() -> None:
    config = CacheConfig(vary=["Accept"])
    base = cache_key(get(query=[("a", "1"), ("b", "2")], headers={"accept": "application/json"}), config)
    assert base == cache_key(get(query=[("b", "2"), ("a", "1")], headers={"accept": "application/json"}), config)
    others = [
        get(query=[("a", "1"), ("b", "3")], headers={"accept": "application/json"}),
        get("/other", query=[("a", "1"), ("b", "2")], headers={"accept": "application/json"}),
        get(query=[("a", "1"), ("b", "2")], headers={"accept": "text/html"}),
        factories.request("HEAD", "/items", query=[("a", "1"), ("b", "2")], headers={"accept": "application/json"}),
    ]
    for other in others:
        assert cache_key(other, config) != base
    alice = get(query=[("a", "1"), ("b", "2")], headers={"accept": "application/json"})
    alice.principal = Principal(consumer="alice")
    assert cache_key(alice, config) != base
    assert cache_key(alice, CacheConfig(vary=["accept"], per_consumer=False)) == base


async def test_consumers_do_not_see_each_others_entries() -> None:
    async with PluginHarness(Cache, {}) as harness:
        alice, bob = get(), get()
        alice.principal, bob.principal = Principal(consumer="alice"), Principal(consumer="bob")
        await through(harness, alice, answer(b"alice's"))
        assert isinstance(await harness.request(alice.model_copy(deep=True)), Respond)
        assert isinstance(await harness.request(bob), Continue)


async def test_request_no_cache_skips_the_lookup_but_stores_and_no_store_does_neither() -> None:
    async with PluginHarness(Cache, {}) as harness:
        await through(harness, get(), answer(b"v1"))
        refreshed = await through(harness, get(headers={"cache-control": "no-cache"}), answer(b"v2"))
        assert refreshed.header("x-cache") == "miss"
        hit = await harness.request(get())
        assert isinstance(hit, Respond) and hit.response.body == b"v2"
        bypass = await through(harness, get(headers={"cache-control": "no-store"}), answer(b"v3"))
        assert bypass.header("x-cache") == "miss" and bypass.body == b"v3"
        hit = await harness.request(get())
        assert isinstance(hit, Respond) and hit.response.body == b"v2", "no-store stored nothing"
        assert isinstance(await harness.request(get(headers={"pragma": "no-cache"})), Continue)


async def test_responses_that_must_not_be_shared_are_not_stored() -> None:
    refused = [
        answer(cache_control="private"),
        answer(cache_control="no-store"),
        answer(cache_control="no-cache"),
        answer(cache_control="max-age=0"),
        answer(set_cookie="session=1"),
        answer(status=404),
        answer(status=500),
        answer(vary="authorization"),
        answer(vary="*"),
    ]
    async with PluginHarness(Cache, {}) as harness:
        for response in refused:
            await through(harness, get(), response)
            assert isinstance(await harness.request(get()), Continue), response.headers
    async with PluginHarness(Cache, {"statuses": [404], "store_set_cookie": True}) as harness:
        await through(harness, get("/gone"), answer(status=404, set_cookie="a=b"))
        assert isinstance(await harness.request(get("/gone")), Respond)


def test_max_age_and_s_maxage_shorten_the_ttl_but_never_lengthen_it() -> None:
    config = CacheConfig(ttl_s=60)
    assert freshness(answer(cache_control="max-age=5"), config) == (5, "")
    assert freshness(answer(cache_control="public, max-age=600"), config) == (60, "")
    assert freshness(answer(cache_control="max-age=30, s-maxage=10"), config) == (10, "")
    assert freshness(answer(), config) == (60, "")
    assert freshness(answer(vary="Accept"), config) == (60, "")


async def test_a_stale_entry_is_a_miss() -> None:
    runtime = MemoryRuntime()
    async with PluginHarness(Cache, {}, runtime=runtime) as harness:
        store = await runtime.kv(CACHE_BUCKET, "test")
        then = time.time() - 120
        await store.put(cache_key(get(), harness.plugin.config), Cached(answer(b"old"), then, then + 60).encode())
        fresh = await through(harness, get(), answer(b"new"))
        assert fresh.header("x-cache") == "miss" and fresh.body == b"new"
        assert (await harness.metrics())["stale"] == 1
        hit = await harness.request(get())
        assert isinstance(hit, Respond) and hit.response.body == b"new"


async def test_an_entry_above_the_max_payload_is_not_stored_and_is_counted() -> None:
    async with PluginHarness(Cache, {}, runtime=MemoryRuntime(max_value_bytes=2048)) as harness:
        await through(harness, get("/big"), answer(b"x" * 4096))
        assert isinstance(await harness.request(get("/big")), Continue)
        await through(harness, get("/small"), answer(b"x" * 100))
        assert isinstance(await harness.request(get("/small")), Respond)
        metrics = await harness.metrics()
        assert metrics["too_large"] == 1 and metrics["stored"] == 1


async def test_methods_not_listed_pass_untouched() -> None:
    async with PluginHarness(Cache, {}) as harness:
        request = factories.request("POST", "/items", json={"a": 1})
        action = await harness.request(request)
        assert isinstance(action, Continue) and "cache" not in action.envelope.annotations
        response = await through(harness, request, answer())
        assert response.header("x-cache") is None
