from __future__ import annotations

import time

import pytest

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Continue, Fail, Respond
from backworks.plugins.fault import Fault
from backworks.plugins.fault.config import FaultConfig, FaultMode


def request(mode: str | None = None) -> Envelope:
    headers = [("x-backworks-fault", mode)] if mode else []
    return Envelope(route="r", method="GET", path="/", headers=headers)


async def test_header_selects_the_mode_and_metrics_count_calls() -> None:
    plugin = Fault(FaultConfig(abort_status=429), instance="f")
    assert isinstance(await plugin.process_request(request()), Continue)
    aborted = await plugin.process_request(request("abort"))
    assert isinstance(aborted, Respond) and aborted.response.status == 429
    assert isinstance(await plugin.process_request(request("fail")), Fail)
    with pytest.raises(RuntimeError, match="fault injected"):
        await plugin.process_request(request("raise"))
    assert isinstance(await plugin.process_request(request("nonsense")), Continue)
    assert await plugin.get_metrics() == {"calls": 5.0, "faults": 3.0}


async def test_delay_and_block_take_the_configured_time() -> None:
    plugin = Fault(FaultConfig(delay_ms=30), instance="f")
    for mode in ("delay", "block"):
        started = time.perf_counter()
        await plugin.process_request(request(mode))
        assert time.perf_counter() - started >= 0.03


async def test_percentage_zero_never_injects() -> None:
    plugin = Fault(FaultConfig(mode=FaultMode.RAISE, percentage=0), instance="f")
    for _ in range(20):
        assert isinstance(await plugin.process_request(request()), Continue)
