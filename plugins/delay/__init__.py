"""``delay``: awaits a fixed time (I/O-bound, no CPU) and passes the request on unchanged.

A stand-in for a stage that waits on something slow (a database, a remote API). The benchmark's
scale-out scenario uses it to show that one slow stage scales by adding replicas of only that stage.
With ``cpu_bound: true`` it burns the CPU for that time instead (a stand-in for a computation), which
the benchmark's CPU-bound scale-out uses to show where more replicas stop helping: when cores run out.
"""

from __future__ import annotations

import asyncio
import time

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Action, Continue, RequestProcessor
from backworks.plugins.delay.config import DelayConfig


class Delay(RequestProcessor[DelayConfig]):
    name = "delay"
    version = "1.0.0"
    description = (
        "Awaits a configured number of milliseconds (I/O-bound), or burns the CPU for them (cpu_bound), then passes "
        "the request on unchanged."
    )
    Config = DelayConfig
    max_execution_time = 1.0

    async def process_request(self, envelope: Envelope) -> Action:
        if self.config.cpu_bound:
            burn(self.config.ms / 1000)
        else:
            await asyncio.sleep(self.config.ms / 1000)
        return Continue(envelope)


def burn(seconds: float) -> None:
    """Keep the CPU busy for ``seconds`` of this thread's CPU time (not wall time: a preempted replica still does
    the whole computation, as a real one would)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass
