"""``fault``: injects delays, aborts, errors, hangs, leaks and crashes, to test resilience end to end.

Not for production: a blueprint with an instance of ``fault`` (or of any plugin declaring the
``fault-injection`` capability) is rejected by validation, naming the file, the JSON pointer
(``/plugins/<instance>/type``) and the instance, unless the validating process runs with
``BACKWORKS_ALLOW_FAULT=1`` (``true``/``yes`` also accepted)::

    BACKWORKS_ALLOW_FAULT=1 backworks up chaos.yaml

Every process that loads the blueprint checks it (the gateway, each ``backworks serve``), so set it for
all of them; ``backworks up`` passes its environment on to the services it starts. The opt-in lives in the
environment rather than in the blueprint on purpose: a blueprint copied from a test into production does
not carry it along.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import ClassVar

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.pipeline.capabilities import FAULT_INJECTION
from backworks.pipeline.plugin import Action, Continue, Fail, RequestProcessor, Respond
from backworks.plugins.fault.config import FaultConfig, FaultMode

EXIT_CODE = 70


class Fault(RequestProcessor[FaultConfig]):
    name = "fault"
    version = "1.0.0"
    description = "Injects delays, aborts, errors, event-loop blocks, memory leaks and crashes (for testing)."
    capabilities = (FAULT_INJECTION,)
    Config = FaultConfig
    max_execution_time = 1.0

    _leaked: ClassVar[list[bytearray]] = []
    _leaked_fds: ClassVar[list[int]] = []

    def __init__(self, config: FaultConfig, *, instance: str) -> None:
        super().__init__(config, instance=instance)
        self.calls = 0
        self.faults = 0

    def mode_for(self, envelope: Envelope) -> FaultMode:
        chosen = self.config.mode
        if self.config.header:
            value = envelope.header(self.config.header)
            if value:
                chosen = FaultMode(value) if value in FaultMode._value2member_map_ else FaultMode.NONE
        if chosen is not FaultMode.NONE and random.uniform(0, 100) >= self.config.percentage:  # noqa: S311 - sampling, not crypto
            return FaultMode.NONE
        return chosen

    async def process_request(self, envelope: Envelope) -> Action:
        self.calls += 1
        mode = self.mode_for(envelope)
        if mode is not FaultMode.NONE:
            self.faults += 1
        delay = self.config.delay_ms / 1000
        if mode is FaultMode.DELAY:
            await asyncio.sleep(delay)
        elif mode is FaultMode.ABORT:
            return Respond(HttpResponse(status=self.config.abort_status, body=b"fault injected"))
        elif mode is FaultMode.RAISE:
            raise RuntimeError("fault injected")
        elif mode is FaultMode.FAIL:
            return Fail("fault injected")
        elif mode is FaultMode.BLOCK:
            time.sleep(delay)  # noqa: ASYNC251 - blocking the event loop is this fault
        elif mode is FaultMode.LEAK:
            self._leaked.append(bytearray(self.config.leak_mb * 1024 * 1024))
        elif mode is FaultMode.EXIT:
            os._exit(EXIT_CODE)
        elif mode is FaultMode.SPIN:
            spin_until = time.process_time() + delay
            while time.process_time() < spin_until:
                pass
        elif mode is FaultMode.FD_LEAK:
            for _ in range(self.config.leak_fds):
                self._leaked_fds.append(os.open(os.devnull, os.O_RDONLY))
        return Continue(envelope)

    async def get_metrics(self) -> dict[str, float]:
        return {"calls": float(self.calls), "faults": float(self.faults)}
