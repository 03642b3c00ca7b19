from __future__ import annotations

import asyncio
from typing import ClassVar

from backworks.contracts.envelope import Envelope, HttpResponse, Stage
from backworks.contracts.names import Phase
from backworks.pipeline.executor import execute
from backworks.pipeline.plugin import Action, Continue, EmptyConfig, Fail, RequestProcessor, Respond


class Scripted(RequestProcessor[EmptyConfig]):
    """Does whatever the test sets in ``behaviour``."""

    name = "scripted"
    behaviour: ClassVar[str] = "continue"

    async def process_request(self, envelope: Envelope) -> Action:
        envelope.set_header("x-touched", "yes")
        if self.behaviour == "raise":
            raise RuntimeError("boom")
        if self.behaviour == "hang":
            await asyncio.sleep(10)
        if self.behaviour == "fail":
            return Fail("nope")
        if self.behaviour == "respond":
            return Respond(HttpResponse(status=401))
        return Continue(envelope)


def envelope(critical: bool) -> Envelope:
    return Envelope(
        route="r",
        method="GET",
        path="/",
        itinerary=[
            Stage(instance="scripted", phase=Phase.REQUEST, critical=critical),
            Stage(instance="handler", phase=Phase.REQUEST, critical=True),
            Stage(instance="enhancer", phase=Phase.RESPONSE),
        ],
    )


async def run(behaviour: str, critical: bool = False, timeout: float = 0.05) -> tuple[Envelope, str | None]:
    Scripted.behaviour = behaviour
    plugin = Scripted(EmptyConfig(), instance="scripted")
    env = envelope(critical)
    outcome = await execute(plugin, Phase.REQUEST, env.to_json(), env, timeout, "replica-1", 1)
    return outcome.envelope, outcome.failure


async def test_continue_advances_and_records_timing() -> None:
    env, failure = await run("continue")
    assert failure is None
    assert env.cursor == 1
    assert env.header("x-touched") == "yes"
    assert [t.stage for t in env.timings] == ["scripted.request"]


async def test_respond_skips_to_the_response_phase() -> None:
    env, failure = await run("respond")
    assert failure is None
    assert env.response is not None and env.response.status == 401
    assert env.current is not None and env.current.instance == "enhancer"


async def test_non_critical_failures_are_skipped_without_partial_changes() -> None:
    for behaviour, kind in [("raise", "error"), ("hang", "timeout"), ("fail", "error")]:
        env, failure = await run(behaviour)
        assert failure == kind
        assert env.cursor == 1
        assert env.header("x-touched") is None, "changes made before the failure must be discarded"
        (error,) = env.errors
        assert error.skipped and error.kind == kind
        assert env.annotations["skipped"] == [{"stage": "scripted.request", "reason": kind}]


async def test_critical_failure_ends_the_pipeline() -> None:
    env, failure = await run("raise", critical=True)
    assert failure == "error"
    assert env.current is None
    (error,) = env.errors
    assert not error.skipped and "RuntimeError: boom" in error.message
