"""``delay``: awaits a fixed time (I/O-bound, no CPU) and passes the request on unchanged.

A stand-in for a stage that waits on something slow (a database, a remote API). The benchmark's
scale-out scenario uses it to show that one slow stage scales by adding replicas of only that stage.
"""

from __future__ import annotations

import asyncio

from backworks.contracts.envelope import Envelope
from backworks.pipeline.plugin import Action, Continue, RequestProcessor
from backworks.plugins.delay.config import DelayConfig


class Delay(RequestProcessor[DelayConfig]):
    name = "delay"
    version = "1.0.0"
    description = "Awaits a configured number of milliseconds (I/O-bound), then passes the request on unchanged."
    Config = DelayConfig
    max_execution_time = 1.0

    async def process_request(self, envelope: Envelope) -> Action:
        await asyncio.sleep(self.config.ms / 1000)
        return Continue(envelope)
