from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DELAY_MS = 50.0


class DelayConfig(BaseModel):
    """How long the stage waits (awaiting, or burning the CPU) before passing the request on."""

    model_config = ConfigDict(extra="forbid")

    ms: float = Field(default=DEFAULT_DELAY_MS, ge=0, le=60_000, description="Milliseconds to await per request.")
    cpu_bound: bool = Field(
        default=False,
        description="Burn the CPU for `ms` instead of awaiting (a stand-in for a CPU-bound stage: the replica's event "
        "loop is busy meanwhile, so only more replicas on more cores raise its throughput).",
    )
