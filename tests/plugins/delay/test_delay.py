"""The ``delay`` plugin: waits without blocking the loop, passes the envelope on unchanged."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from backworks.contracts.envelope import Envelope
from backworks.contracts.names import Phase
from backworks.pipeline import registry
from backworks.pipeline.executor import dispatch
from backworks.pipeline.plugin import Category, Continue
from backworks.plugins.delay import Delay
from backworks.plugins.delay.config import DEFAULT_DELAY_MS, DelayConfig


def envelope() -> Envelope:
    return Envelope(route="r", method="GET", path="/x", headers=[("a", "1")], body=b"payload")


def test_registered_as_a_request_processor() -> None:
    assert registry.get("delay") is Delay
    assert Delay.category is Category.REQUEST_PROCESSOR
    assert Delay.phases == (Phase.REQUEST,)


def test_config_defaults_and_bounds() -> None:
    assert DelayConfig().ms == DEFAULT_DELAY_MS == 50.0
    with pytest.raises(ValidationError):
        DelayConfig(ms=-1)
    with pytest.raises(ValidationError):
        DelayConfig.model_validate({"ms": 5, "extra": True})


async def test_waits_then_continues_with_the_envelope_unchanged() -> None:
    plugin = Delay(DelayConfig(ms=30), instance="slow")
    before = envelope()
    expected = before.model_dump()
    started = time.perf_counter()
    action = await dispatch(plugin, Phase.REQUEST, before)
    elapsed = time.perf_counter() - started
    assert isinstance(action, Continue)
    assert action.envelope.model_dump() == expected
    assert elapsed >= 0.03


async def test_waits_concurrently_without_blocking_the_loop() -> None:
    plugin = Delay(DelayConfig(ms=100), instance="slow")
    started = time.perf_counter()
    actions = await asyncio.gather(*(dispatch(plugin, Phase.REQUEST, envelope()) for _ in range(20)))
    assert all(isinstance(action, Continue) for action in actions)
    assert time.perf_counter() - started < 20 * 0.1 / 2  # 20 sequential waits would take 2 s


async def test_zero_delay_passes_straight_through() -> None:
    action = await dispatch(Delay(DelayConfig(ms=0), instance="slow"), Phase.REQUEST, envelope())
    assert isinstance(action, Continue)


async def test_cpu_bound_burns_the_cpu_instead_of_awaiting() -> None:
    plugin = Delay(DelayConfig(ms=30, cpu_bound=True), instance="busy")
    before = envelope()
    expected = before.model_dump()
    cpu_started = time.thread_time()
    action = await dispatch(plugin, Phase.REQUEST, before)
    assert isinstance(action, Continue)
    assert action.envelope.model_dump() == expected
    assert time.thread_time() - cpu_started >= 0.03, "the time was spent on this thread's CPU, not awaited"
