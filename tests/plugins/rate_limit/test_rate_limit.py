"""The rate-limit plugin through the SDK harness: decisions, 429 documents, headers, callers, on_error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backworks.contracts.envelope import Envelope, Principal
from backworks.pipeline.errors import StoreUnavailable
from backworks.pipeline.plugin import Continue, Respond
from backworks.pipeline.stores import KeyValueStore, MemoryRuntime
from backworks.plugins.rate_limit import RateLimit
from backworks.sdk import factories
from backworks.sdk.harness import PluginHarness


async def test_allows_the_limit_then_answers_429_problem_json_with_retry_after_and_headers() -> None:
    async with PluginHarness(RateLimit, {"limit": 2, "window_s": 60, "by": "ip"}) as harness:
        for remaining in (1, 0):
            action = await harness.request(factories.request(client="10.0.0.1"))
            assert isinstance(action, Continue)
            envelope = action.envelope
            envelope.response = factories.response(200).response
            done = await harness.response(envelope)
            assert isinstance(done, Continue) and done.envelope.response is not None
            headers = dict(done.envelope.response.headers)
            assert headers["ratelimit-limit"] == "2"
            assert headers["ratelimit-remaining"] == str(remaining)
            assert 60 <= int(headers["ratelimit-reset"]) <= 63
            assert headers["ratelimit-policy"] == "2;w=60"
        refused = await harness.request(factories.request(client="10.0.0.1"))
        assert isinstance(refused, Respond)
        response = refused.response
        assert response.status == 429
        assert response.header("content-type") == "application/problem+json"
        body = json.loads(response.body)
        assert body["status"] == 429 and body["title"] == "Too Many Requests"
        assert "2 requests per 60 s" in body["detail"]
        assert 59 <= int(response.header("retry-after") or 0) <= 63
        assert response.header("ratelimit-remaining") == "0"
        assert response.header("ratelimit-limit") == "2"
        # Another caller has its own budget.
        assert isinstance(await harness.request(factories.request(client="10.0.0.2")), Continue)


async def test_the_response_phase_puts_the_headers_on_the_429_too() -> None:
    async with PluginHarness(RateLimit, {"limit": 1, "by": "ip"}) as harness:
        await harness.request(factories.request())
        refused = await harness.request(factories.request())
        assert isinstance(refused, Respond)
        # The executor keeps the request's annotations when a stage responds early.
        envelope = factories.request()
        envelope.annotations = {"rate_limit": {"test": {"limit": 1, "remaining": 0, "reset": 60}}}
        envelope.response = refused.response
        done = await harness.response(envelope)
        assert isinstance(done, Continue) and done.envelope.response is not None
        assert done.envelope.response.header("ratelimit-remaining") == "0"


@pytest.mark.parametrize(
    ("config", "same", "other"),
    [
        (
            {"by": "consumer"},
            {"principal": Principal(consumer="alice"), "client": "1.1.1.1"},
            {"principal": Principal(consumer="bob"), "client": "1.1.1.1"},
        ),
        ({"by": "ip"}, {"client": "1.1.1.1"}, {"client": "2.2.2.2"}),
        (
            {"by": "header", "header": "X-Tenant"},
            {"headers": {"x-tenant": "acme"}, "client": "1.1.1.1"},
            {"headers": {"x-tenant": "globex"}, "client": "1.1.1.1"},
        ),
        ({"by": "consumer"}, {"client": "1.1.1.1"}, {"client": "2.2.2.2"}),  # no principal: by IP
        ({"by": "header", "header": "x-tenant"}, {"client": "1.1.1.1"}, {"client": "2.2.2.2"}),  # no header: by IP
    ],
)
async def test_callers_are_told_apart_by_the_configured_key(
    config: dict[str, Any], same: dict[str, Any], other: dict[str, Any]
) -> None:
    def build(parts: dict[str, Any]) -> Envelope:
        envelope = factories.request(headers=parts.get("headers"), client=parts["client"])
        envelope.principal = parts.get("principal")
        return envelope

    async with PluginHarness(RateLimit, {"limit": 1, **config}) as harness:
        assert isinstance(await harness.request(build(same)), Continue)
        assert isinstance(await harness.request(build(same)), Respond)
        assert isinstance(await harness.request(build(other)), Continue)


def test_by_header_needs_the_header_name() -> None:
    with pytest.raises(Exception, match="needs `header:`"):
        factories.config(RateLimit, {"limit": 1, "by": "header"})


class Unreachable(MemoryRuntime):
    """Stores that cannot be reached, as when the KV bucket's stream has no leader."""

    async def kv(self, bucket: str, namespace: str) -> KeyValueStore:
        store = await super().kv(bucket, namespace)

        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("no responders")

        store.update = store.get = fail  # type: ignore[method-assign]  # every operation of this store fails
        return store


async def test_on_error_allow_lets_requests_through_without_headers() -> None:
    async with PluginHarness(RateLimit, {"limit": 1, "by": "ip"}, runtime=Unreachable()) as harness:
        for _ in range(3):
            action = await harness.request(factories.request())
            assert isinstance(action, Continue)
            assert "rate_limit" not in action.envelope.annotations
        assert (await harness.metrics())["kv_errors"] == 3


async def test_on_error_deny_answers_503_with_retry_after() -> None:
    async with PluginHarness(RateLimit, {"limit": 1, "on_error": "deny"}, runtime=Unreachable()) as harness:
        action = await harness.request(factories.request())
        assert isinstance(action, Respond)
        assert action.response.status == 503
        assert action.response.header("retry-after") == "1"
        assert "on_error: deny" in json.loads(action.response.body)["detail"]
