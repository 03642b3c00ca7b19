"""authorize: all scopes and/or one of the consumers; 403 problem+json otherwise, 401 without a principal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backworks.contracts.envelope import Envelope, Principal
from backworks.pipeline.configs import validate_config
from backworks.plugins.authorize import Authorize
from backworks.plugins.authorize.config import AuthorizeConfig
from backworks.sdk import PluginHarness, assert_continued, assert_responded, request


def calling(consumer: str, *scopes: str, kind: str = "api-key") -> Envelope:
    envelope = request(path="/notes")
    envelope.principal = Principal(consumer=consumer, kind=kind, scopes=list(scopes))
    return envelope


def problem_of(envelope_or_action: Any, status: int) -> dict[str, Any]:
    response = assert_responded(envelope_or_action, status=status)
    assert response.header("content-type") == "application/problem+json"
    document: dict[str, Any] = json.loads(response.body)
    assert document["status"] == status
    return document


async def test_a_caller_with_every_scope_goes_on() -> None:
    async with PluginHarness(Authorize, {"scopes": ["notes:write", "notes:read"]}) as harness:
        assert_continued(await harness.request(calling("alice", "notes:read", "notes:write", "extra")))


async def test_a_missing_scope_is_403_naming_it() -> None:
    async with PluginHarness(Authorize, {"scopes": ["notes:write", "notes:read"]}) as harness:
        action = await harness.request(calling("bob", "notes:read"))
    document = problem_of(action, 403)
    assert document["title"] == "Forbidden"
    assert document["detail"] == "missing scope(s): notes:write"
    assert document["missing_scopes"] == ["notes:write"]
    assert assert_responded(action).header("www-authenticate") is None, "an API key caller gets no Bearer challenge"


async def test_a_jwt_caller_missing_a_scope_gets_the_rfc_6750_challenge() -> None:
    async with PluginHarness(Authorize, {"scopes": ["notes:write"]}) as harness:
        action = await harness.request(calling("bob", "notes:read", kind="jwt"))
    response = assert_responded(action, status=403)
    assert response.header("www-authenticate") == 'Bearer error="insufficient_scope", scope="notes:write"'


async def test_consumers_allow_any_of_them_and_refuse_others() -> None:
    async with PluginHarness(Authorize, {"consumers": ["alice", "carol"]}) as harness:
        assert_continued(await harness.request(calling("carol")))
        document = problem_of(await harness.request(calling("mallory", "notes:write")), 403)
    assert document["detail"] == "consumer 'mallory' may not call this endpoint"


async def test_consumers_and_scopes_must_both_hold() -> None:
    async with PluginHarness(Authorize, {"consumers": ["alice"], "scopes": ["admin"]}) as harness:
        assert_continued(await harness.request(calling("alice", "admin")))
        assert_responded(await harness.request(calling("alice")), status=403)
        assert_responded(await harness.request(calling("bob", "admin")), status=403)


async def test_no_principal_is_401() -> None:
    async with PluginHarness(Authorize, {"scopes": ["notes:read"]}) as harness:
        document = problem_of(await harness.request(request()), 401)
    assert document["detail"] == "this endpoint needs an authenticated caller"


@pytest.mark.parametrize(
    ("config", "expected"),
    [({}, "set `scopes` and/or `consumers`"), ({"scope": ["a"]}, "unknown key 'scope'")],
)
def test_invalid_configs_say_what_is_wrong(config: dict[str, Any], expected: str) -> None:
    model, problems = validate_config(AuthorizeConfig, config)
    assert model is None and any(expected in problem.message for problem in problems), problems


def test_it_requires_the_principal_capability() -> None:
    assert Authorize.requires_capabilities == ("principal",)
