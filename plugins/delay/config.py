from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DELAY_MS = 50.0


class DelayConfig(BaseModel):
    """How long the stage waits, without using the CPU, before passing the request on."""

    model_config = ConfigDict(extra="forbid")

    ms: float = Field(default=DEFAULT_DELAY_MS, ge=0, le=60_000, description="Milliseconds to await per request.")
