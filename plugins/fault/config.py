from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class FaultMode(str, Enum):
    """What the fault plugin does to a request."""

    NONE = "none"
    """Pass the request on untouched."""
    DELAY = "delay"
    """Await ``delay_ms`` (an I/O-bound stall), then pass the request on."""
    ABORT = "abort"
    """Answer at once with ``abort_status``."""
    RAISE = "raise"
    """Raise an exception from the hook."""
    FAIL = "fail"
    """Return ``Fail`` from the hook."""
    BLOCK = "block"
    """Block the event loop for ``delay_ms`` (a CPU-bound or synchronous hang)."""
    LEAK = "leak"
    """Allocate ``leak_mb`` and never release it."""
    EXIT = "exit"
    """Kill the plugin process at once (exit code 70), as a crash would."""
    SPIN = "spin"
    """Burn CPU for ``delay_ms`` without yielding (what a runaway computation does; meets ``limits.cpu_seconds``)."""
    FD_LEAK = "fd-leak"
    """Open ``leak_fds`` file descriptors and never close them (meets ``limits.open_files``)."""


class FaultConfig(BaseModel):
    """Fault injection, like Envoy's fault filter: for testing how an API behaves when a plugin misbehaves.

    The mode is ``mode`` unless the request carries the ``header`` header, whose value then names the mode.
    """

    model_config = ConfigDict(extra="forbid")

    mode: FaultMode = Field(default=FaultMode.NONE, description="Fault applied to every request.")
    header: str | None = Field(default="x-backworks-fault", description="Request header that selects the mode.")
    percentage: float = Field(default=100.0, ge=0, le=100, description="Share of requests the fault applies to.")
    delay_ms: int = Field(default=50, ge=0, description="Delay for `delay` and `block`.")
    abort_status: int = Field(default=503, ge=100, le=599, description="Status for `abort`.")
    leak_mb: int = Field(default=64, ge=1, description="Megabytes kept per `leak` request.")
    leak_fds: int = Field(default=16, ge=1, description="File descriptors kept open per `fd-leak` request.")
