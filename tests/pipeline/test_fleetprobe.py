"""The fleet probe: nobody subscribed is no answer; a slow candidate check is waited for, a missing verdict vetoes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from structlog.testing import capture_logs

from backworks.contracts.revision import ProbeAnswer
from backworks.pipeline.fleetprobe import ProbeResponder, ask


async def test_a_probe_nobody_subscribes_to_has_no_answers_and_no_warning(nats_client: Client) -> None:
    with capture_logs() as logs:
        answers = await ask(nats_client, window=0.5)
    assert answers == []
    assert not [entry for entry in logs if entry["log_level"] == "warning"], logs


def responder(
    client: Client, name: str, check: Callable[[dict[str, Any] | None], Awaitable[list[str]]]
) -> ProbeResponder:
    async def answer(candidate: dict[str, Any] | None) -> ProbeAnswer:
        return ProbeAnswer(role="stage", name=name, replica=f"{name}-1", revision=1, problems=await check(candidate))

    return ProbeResponder(client, answer)


async def test_a_check_slower_than_the_window_is_waited_for_and_its_veto_heard(nats_client: Client) -> None:
    async def slow(candidate: dict[str, Any] | None) -> list[str]:
        if candidate is None:
            return []
        await asyncio.sleep(1.5)  # three times the window answers are gathered in
        return ["plugin 'x' is not installed here"]

    async def fast(candidate: dict[str, Any] | None) -> list[str]:
        return []

    slow_one, fast_one = responder(nats_client, "slow", slow), responder(nats_client, "fast", fast)
    for one in (slow_one, fast_one):
        await one.start()
    try:
        answers = await ask(nats_client, {"blueprint": {}, "source": "x"}, window=0.5)
        status = await ask(nats_client, window=0.5)
    finally:
        for one in (slow_one, fast_one):
            await one.stop()
    assert sorted((a.name, a.problems, a.checking) for a in answers) == [
        ("fast", [], False),
        ("slow", ["plugin 'x' is not installed here"], False),
    ]
    assert sorted(a.name for a in status) == ["fast", "slow"], "a probe without a candidate is answered once"


async def test_a_service_that_says_it_is_checking_but_gives_no_verdict_counts_as_refusing(nats_client: Client) -> None:
    async def stuck(candidate: dict[str, Any] | None) -> list[str]:
        if candidate is not None:
            await asyncio.Event().wait()
        return []

    one = responder(nats_client, "stuck", stuck)
    await one.start()
    try:
        (answer,) = await ask(nats_client, {"blueprint": {}, "source": "x"}, window=0.5, patience=1.0)
    finally:
        await one.stop()
    assert answer.name == "stuck" and answer.problems == ["gave no verdict on the candidate within 1 s"]


async def test_a_status_probe_ends_as_soon_as_the_answers_are_enough(nats_client: Client) -> None:
    async def none(candidate: dict[str, Any] | None) -> list[str]:
        return []

    ones = [responder(nats_client, name, none) for name in ("a", "b")]
    for one in ones:
        await one.start()
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        answers = await ask(nats_client, window=60.0, enough=lambda heard: {a.name for a in heard} == {"a", "b"})
        took = loop.time() - began
        unmet = await ask(nats_client, window=0.5, enough=lambda heard: False)
    finally:
        for one in ones:
            await one.stop()
    assert sorted(a.name for a in answers) == ["a", "b"]
    assert took < 30.0, "the probe listened for its whole window although every answer it needed had come"
    assert sorted(a.name for a in unmet) == ["a", "b"], "answers that are not enough are still all returned"
