"""The in-process harness, the factories and the assertions of the plugin development kit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from backworks.contracts.envelope import Envelope, HttpResponse, StageError
from backworks.pipeline.errors import PluginConfigError, PluginContractError
from backworks.pipeline.plugin import Action, Continue, EmptyConfig, Fail, RequestProcessor, Respond
from backworks.plugins.request_headers import RequestHeaders
from backworks.plugins.response_headers import ResponseHeaders
from backworks.sdk import (
    HookTimeout,
    PluginHarness,
    assert_continued,
    assert_failed,
    assert_header,
    assert_no_header,
    assert_responded,
    config,
    request,
    response,
)


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr
    limit: int = Field(default=3, ge=1)


class Gate(RequestProcessor[GateConfig]):
    name = "gate"
    version = "1.0.0"
    description = "Lets the token through, refuses the rest; misbehaves on demand."
    Config = GateConfig
    max_execution_time = 0.05
    started = False

    async def startup(self) -> None:
        self.started = True

    async def process_request(self, envelope: Envelope) -> Action:
        given = envelope.header("authorization")
        if given == "slow":
            await asyncio.sleep(1)
        if given == "junk":
            envelope.annotations["bad"] = object()
            return Continue(envelope)
        if given == "none":
            return None  # type: ignore[return-value]  # the mistake under test
        if given == "fail":
            return Fail("upstream down")
        if given != self.config.token.get_secret_value():
            return Respond(HttpResponse(status=401))
        envelope.set_header("x-gate", "passed")
        return Continue(envelope)


def test_factories_build_envelopes_like_the_gateway() -> None:
    built = request("post", "/items/7", headers={"X-Team": "blue"}, query={"page": "2"}, json={"a": 1},
                    path_params={"id": "7"})  # fmt: skip
    assert (built.method, built.path, built.path_params) == ("POST", "/items/7", {"id": "7"})
    assert built.headers == [("x-team", "blue"), ("content-type", "application/json")]
    assert built.query == [("page", "2")] and json.loads(built.body) == {"a": 1}
    assert built.remaining() > 0
    answered = response(503, body="down", request=built)
    assert answered.response == HttpResponse(status=503, body=b"down") and answered.path == "/items/7"
    assert built.response is None, "the request given is not changed"


def test_config_factory_validates_like_a_blueprint() -> None:
    made = config(Gate, {"token": "s3cret-value"}, limit=5)
    assert isinstance(made, GateConfig) and made.limit == 5
    again = config(Gate, made, limit=2)  # config() returns a BaseModel: narrowed like `made` above
    assert isinstance(again, GateConfig) and again.token.get_secret_value() == "s3cret-value"
    with pytest.raises(PluginConfigError) as caught:
        config(Gate, {"token": 123456789, "limit": 0, "other": 1})
    message = str(caught.value)
    assert "/limit: 0 is less than the minimum of 1" in message and "/other: unknown key 'other'" in message
    assert "123456789" not in message and "/token: secret value rejected" in message


async def test_harness_runs_hooks_as_the_stage_host_does() -> None:
    async with PluginHarness(Gate, {"token": "let-in"}) as harness:
        assert harness.plugin.started
        assert_responded(await harness.request(request()), status=401)
        passed = assert_continued(await harness.request(headers={"authorization": "let-in"}))
        assert_header(passed, "x-gate", "passed")
        assert (
            assert_failed(await harness.request(headers={"authorization": "fail"}), contains="down") == "upstream down"
        )
        with pytest.raises(AssertionError, match="does not serve the response phase"):
            await harness.response(response())


async def test_harness_catches_what_would_break_in_the_stage_host() -> None:
    async with PluginHarness(Gate, {"token": "t"}) as harness:
        with pytest.raises(HookTimeout, match="took longer than 50 ms"):
            await harness.request(headers={"authorization": "slow"})
        with pytest.raises(AssertionError, match="cannot be sent over NATS"):
            await harness.request(headers={"authorization": "junk"})
        with pytest.raises(AssertionError, match="returned NoneType; a hook must return Continue, Respond or Fail"):
            await harness.request(headers={"authorization": "none"})


async def test_the_envelope_given_is_not_changed_by_the_hook() -> None:
    original = request()
    async with PluginHarness(RequestHeaders, {"set": {"x-a": "1"}}) as harness:
        changed = assert_continued(await harness.request(original))
    assert_header(changed, "x-a", "1")
    assert_no_header(original, "x-a")


async def test_response_phase_and_direct_hook_calls() -> None:
    async with PluginHarness(ResponseHeaders, {"set": {"x-b": "2"}, "remove": ["server"]}) as harness:
        done = assert_continued(await harness.response(status=200, headers={"server": "x"}))
        assert done.response is not None
        assert_header(done.response, "x-b", "2")
        assert_no_header(done.response, "server")
        direct = await harness.call("enhance_response", response())
        assert isinstance(direct, Continue)
        assert (await harness.health()).status.value == "healthy" and await harness.metrics() == {}


def test_the_harness_refuses_a_broken_plugin() -> None:
    class Broken(RequestProcessor[EmptyConfig]):
        name = "broken"

        async def process_request(self, envelope: Envelope) -> Action:
            return Continue(envelope)

    with pytest.raises(PluginContractError, match="no `version`"):
        PluginHarness(Broken)


def test_assertions_read_stage_results_too() -> None:
    passed = request()
    assert assert_continued(passed) is passed
    answered = response(429)
    assert assert_responded(answered, status=429).status == 429
    failed = request()
    failed.errors.append(StageError(stage="x.request", kind="timeout", message="hook took longer", skipped=True))
    assert assert_failed(failed, contains="longer") == "hook took longer"
    cases: list[tuple[Any, Any]] = [
        (assert_continued, failed),
        (assert_responded, passed),
        (assert_failed, passed),
        (lambda r: assert_responded(r, status=200), answered),
        (lambda r: assert_header(r, "x-missing"), passed),
    ]
    for check, value in cases:
        with pytest.raises(AssertionError):
            check(value)
