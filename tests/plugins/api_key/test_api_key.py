"""api-key: digests only, constant-time comparison, 401 problem+json with a challenge, principal on success."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from backworks.contracts.envelope import HttpResponse
from backworks.pipeline.configs import schema_of, validate_config
from backworks.pipeline.secrets import is_secret_path
from backworks.plugins.api_key import ApiKey, digest
from backworks.plugins.api_key.config import ApiKeyConfig
from backworks.sdk import PluginHarness, assert_continued, assert_responded

ALICE_KEY = "alice-key-0123456789"
BOB_KEY = "bob-key-9876543210"
KEYS: list[dict[str, Any]] = [
    {"consumer": "alice", "sha256": digest(ALICE_KEY), "scopes": ["notes:write", "notes:read"]},
    {"consumer": "bob", "sha256": digest(BOB_KEY).upper()},
]


def body(response: HttpResponse) -> dict[str, Any]:
    assert response.header("content-type") == "application/problem+json"
    parsed: dict[str, Any] = json.loads(response.body)
    return parsed


def test_digest_is_the_hex_sha256_of_the_key() -> None:
    assert digest("s3cret") == hashlib.sha256(b"s3cret").hexdigest()


async def test_a_known_key_sets_the_principal_with_consumer_and_scopes() -> None:
    async with PluginHarness(ApiKey, {"keys": KEYS}) as harness:
        envelope = assert_continued(await harness.request(headers={"x-api-key": ALICE_KEY}))
        assert envelope.principal is not None
        assert (envelope.principal.consumer, envelope.principal.kind) == ("alice", "api-key")
        assert envelope.principal.scopes == ["notes:write", "notes:read"]
        assert envelope.header("x-api-key") == ALICE_KEY, "kept unless hide_credentials"
        (decision,) = envelope.annotations["security"]
        assert (decision["decision"], decision["consumer"], decision["reason"]) == ("allowed", "alice", "known API key")
        bob = assert_continued(await harness.request(headers={"x-api-key": BOB_KEY}))
        assert bob.principal is not None and bob.principal.consumer == "bob", "upper-case digests match too"


async def test_a_missing_key_gets_401_with_a_challenge_saying_where_to_send_it() -> None:
    async with PluginHarness(ApiKey, {"keys": KEYS}) as harness:
        response = assert_responded(await harness.request(), status=401)
    assert response.header("www-authenticate") == 'ApiKey realm="api", header="x-api-key"'
    document = body(response)
    assert document["status"] == 401 and document["title"] == "Unauthorized"
    assert document["detail"] == "missing API key: send it in the 'x-api-key' header"


async def test_an_unknown_key_gets_401_without_echoing_it() -> None:
    async with PluginHarness(ApiKey, {"keys": KEYS}) as harness:
        response = assert_responded(await harness.request(headers={"x-api-key": "guessed-key"}), status=401)
    assert "guessed-key" not in response.model_dump_json()
    assert body(response)["detail"] == "unknown API key: it matches none of the keys this API knows"
    assert response.header("www-authenticate") is not None


async def test_every_digest_is_compared_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the number of comparisons does not depend on which key (if any) matched."""
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    plugin = ApiKey(ApiKeyConfig.model_validate({"keys": KEYS}), instance="k")
    counts = []
    for key in (ALICE_KEY, BOB_KEY, "nope"):
        calls.clear()
        plugin._match(key)
        counts.append(len(calls))
    assert counts == [len(KEYS)] * 3


async def test_query_parameter_and_header_are_both_accepted_when_configured() -> None:
    config = {"keys": KEYS, "query": "api_key"}
    async with PluginHarness(ApiKey, config) as harness:
        envelope = assert_continued(await harness.request(query={"api_key": BOB_KEY}))
        assert envelope.principal is not None and envelope.principal.consumer == "bob"
        response = assert_responded(await harness.request(), status=401)
        assert response.header("www-authenticate") == 'ApiKey realm="api", header="x-api-key", query="api_key"'
        assert body(response)["detail"] == (
            "missing API key: send it in the 'x-api-key' header or the 'api_key' query parameter"
        )
    async with PluginHarness(ApiKey, {"keys": KEYS, "query": "api_key", "header": None, "audit": "none"}) as harness:
        assert_responded(await harness.request(headers={"x-api-key": ALICE_KEY}), status=401)
        quiet = assert_continued(await harness.request(query={"api_key": ALICE_KEY}))
        assert "security" not in quiet.annotations, "audit: none notes nothing"


async def test_hide_credentials_removes_the_key_before_later_stages() -> None:
    config = {"keys": KEYS, "query": "api_key", "hide_credentials": True}
    async with PluginHarness(ApiKey, config) as harness:
        envelope = assert_continued(await harness.request(headers={"x-api-key": ALICE_KEY}, query={"api_key": "x"}))
    assert envelope.header("x-api-key") is None and envelope.query_param("api_key") is None


def test_credentials_name_the_header_and_query_for_redaction() -> None:
    config = ApiKeyConfig.model_validate({"keys": KEYS, "header": "X-Key", "query": "k"})
    credentials = ApiKey.credentials(config)
    assert (credentials.headers, credentials.query) == (("X-Key",), ("k",))


def test_digests_are_secret_and_consumers_are_not() -> None:
    schema = schema_of(ApiKeyConfig)
    assert is_secret_path(schema, ("keys", 0, "sha256"))
    assert not is_secret_path(schema, ("keys", 0, "consumer"))
    assert not is_secret_path(schema, ("keys", 0, "scopes", 0))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"keys": []}, "should be non-empty"),
        ({"keys": [{"consumer": "a", "sha256": "s3cret"}]}, "value hidden"),
        ({"keys": [{"consumer": "a"}]}, "'sha256' is a required property"),
        ({"keys": KEYS, "header": None}, "set `header` or `query`"),
        ({"keys": [KEYS[0], {**KEYS[0], "consumer": "eve"}]}, "'alice' and 'eve' have the same key digest"),
        ({"keys": KEYS, "headers": "x"}, "unknown key 'headers'"),
    ],
)
def test_invalid_configs_say_what_is_wrong(config: dict[str, Any], expected: str) -> None:
    model, problems = validate_config(ApiKeyConfig, config)
    assert model is None
    assert any(expected in problem.message for problem in problems), problems
    assert all("s3cret" not in problem.message for problem in problems)
