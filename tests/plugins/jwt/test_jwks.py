"""jwt with a JWKS served over real HTTP: fetched at startup, refetched on an unknown kid, never flooded."""

from __future__ import annotations

import asyncio
from typing import Any

from backworks.pipeline.plugin import HealthStatus
from backworks.plugins.jwt import Jwt
from backworks.sdk import PluginHarness, assert_continued, assert_failed, assert_responded
from tests.plugins.jwt.tokens import AUDIENCE, jwks_server, signing_key, token


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {"algorithms": ["RS256", "ES256"], "jwks_url": url, "audience": AUDIENCE, **extra}


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def test_keys_are_fetched_once_at_startup_and_reused() -> None:
    first, second = signing_key("k1"), signing_key("k2", "ES256")
    with jwks_server(first, second) as server:
        async with PluginHarness(Jwt, config(server.url)) as harness:
            assert server.fetches == 1
            for key in (first, second, first):
                envelope = assert_continued(await harness.request(headers=bearer(token(key))))
                assert envelope.principal is not None and envelope.principal.consumer == "alice"
            assert server.fetches == 1, "served from the cache"
            assert (await harness.metrics())["jwks_keys"] == 2


async def test_an_unknown_kid_fetches_the_set_again_and_finds_a_rotated_key() -> None:
    old, new = signing_key("old"), signing_key("new")
    with jwks_server(old) as server:
        async with PluginHarness(Jwt, config(server.url, jwks_min_refresh_s=0)) as harness:
            server.keys = [old.jwk, new.jwk]  # the issuer rotates
            assert_continued(await harness.request(headers=bearer(token(new))))
            assert server.fetches == 2


async def test_a_flood_of_made_up_kids_fetches_at_most_once_per_interval() -> None:
    key = signing_key("real")
    with jwks_server(key) as server:
        async with PluginHarness(Jwt, config(server.url, jwks_min_refresh_s=3600)) as harness:
            bogus = [token(key, kid=f"bogus-{n}") for n in range(50)]
            results = await asyncio.gather(*(harness.request(headers=bearer(t)) for t in bogus))
            for result in results:
                response = assert_responded(result, status=401)
                assert b"unknown key" in response.body
            assert server.fetches == 1, "only the startup fetch: the refetch interval has not passed"
            assert_continued(await harness.request(headers=bearer(token(key))))


async def test_concurrent_unknown_kids_share_one_refetch() -> None:
    key, rotated = signing_key("real"), signing_key("rotated")
    with jwks_server(key) as server:
        async with PluginHarness(Jwt, config(server.url, jwks_min_refresh_s=0)) as harness:
            server.keys = [key.jwk, rotated.jwk]
            results = await asyncio.gather(*(harness.request(headers=bearer(token(rotated))) for _ in range(20)))
            for result in results:
                assert_continued(result)
            assert server.fetches == 2, "startup + one refetch shared by all twenty"


async def test_a_token_without_kid_uses_the_only_key() -> None:
    key = signing_key("solo")
    with jwks_server(key) as server:
        async with PluginHarness(Jwt, config(server.url)) as harness:
            assert_continued(await harness.request(headers=bearer(token(key, kid=None))))
    with jwks_server(key, signing_key("other")) as server:
        async with PluginHarness(Jwt, config(server.url)) as harness:
            response = assert_responded(await harness.request(headers=bearer(token(key, kid=None))), status=401)
            assert b"token has no `kid` header and the key set has 2 keys" in response.body


async def test_an_unreachable_jwks_is_a_degraded_health_and_a_failed_stage_not_a_401() -> None:
    key = signing_key("real")
    with jwks_server(key) as server:
        server.status = 503
        async with PluginHarness(Jwt, config(server.url, jwks_min_refresh_s=0)) as harness:
            health = await harness.health()
            assert health.status is HealthStatus.DEGRADED and "HTTPStatusError" in health.message
            reason = assert_failed(await harness.request(headers=bearer(token(key))), "cannot verify tokens")
            assert server.url in reason
            server.status = 200  # the endpoint recovers: the next token fetches the set
            assert_continued(await harness.request(headers=bearer(token(key))))
            assert (await harness.health()).status is HealthStatus.HEALTHY


async def test_a_failed_refetch_keeps_the_keys_held() -> None:
    key = signing_key("real")
    with jwks_server(key) as server:
        async with PluginHarness(Jwt, config(server.url, jwks_min_refresh_s=0)) as harness:
            server.status = 500
            unknown = assert_responded(await harness.request(headers=bearer(token(key, kid="gone"))), status=401)
            assert b"unknown key" in unknown.body
            assert_continued(await harness.request(headers=bearer(token(key))))


async def test_a_set_older_than_jwks_cache_s_is_fetched_again() -> None:
    key = signing_key("real")
    with jwks_server(key) as server:
        async with PluginHarness(Jwt, config(server.url, jwks_cache_s=0.1, jwks_min_refresh_s=0)) as harness:
            assert_continued(await harness.request(headers=bearer(token(key))))
            fetched = server.fetches
            await asyncio.sleep(0.5)  # several times the cache lifetime
            assert_continued(await harness.request(headers=bearer(token(key))))
            assert server.fetches == fetched + 1
