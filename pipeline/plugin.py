"""The plugin contract: what a plugin author writes.

A plugin is a small class with metadata as class attributes, a pydantic ``Config`` model (its JSON
Schema is generated from it), and async hooks. Each hook gets the envelope and returns an action:

- ``Continue(envelope)``: go on with the (possibly changed) envelope;
- ``Respond(response)``: answer now (e.g. 401, 429); response enhancers still run;
- ``Fail(reason)``: this stage failed; criticality decides whether the request fails or goes on.

Raising an exception or overrunning ``max_execution_time`` counts as ``Fail``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from contracts.envelope import Envelope, HttpResponse
from contracts.names import Phase

DEFAULT_MAX_EXECUTION_TIME = 0.1
"""Seconds a hook may take before it counts as failed (the design's 100 ms)."""


class Category(str, Enum):
    """What a plugin does, which fixes the hooks it implements and the phases it serves."""

    REQUEST_PROCESSOR = "request-processor"
    """Reads or changes the request (``process_request``), request phase."""
    RESPONSE_ENHANCER = "response-enhancer"
    """Changes the response (``enhance_response``), response phase, reverse order."""
    HANDLER = "handler"
    """Produces the response (``handle``); the last request-phase stage of an endpoint."""


class HealthStatus(str, Enum):
    """Health of one plugin replica."""

    HEALTHY = "healthy"
    """Working normally."""
    DEGRADED = "degraded"
    """Working, with reduced quality."""
    UNHEALTHY = "unhealthy"
    """Not able to do its work."""


@dataclass(frozen=True)
class Health:
    status: HealthStatus = HealthStatus.HEALTHY
    message: str = ""


@dataclass(frozen=True)
class Continue:
    """Go on with this envelope."""

    envelope: Envelope


@dataclass(frozen=True)
class Respond:
    """Answer the client now; the remaining request stages are skipped."""

    response: HttpResponse


@dataclass(frozen=True)
class Fail:
    """This stage failed; the reason is reported to the client if the stage is critical."""

    reason: str


Action = Continue | Respond | Fail


class EmptyConfig(BaseModel):
    """Config of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Plugin(Generic[ConfigT]):
    """Base of every plugin. Subclass one of the category classes below, not this one."""

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    description: ClassVar[str] = ""
    category: ClassVar[Category]
    Config: ClassVar[type[BaseModel]] = EmptyConfig
    max_execution_time: ClassVar[float] = DEFAULT_MAX_EXECUTION_TIME
    is_critical: ClassVar[bool] = False
    priority: ClassVar[int] = 0
    phases: ClassVar[tuple[Phase, ...]] = ()

    def __init__(self, config: ConfigT, *, instance: str) -> None:
        self.config = config
        self.instance = instance

    async def startup(self) -> None:
        """Called once per replica before the first message."""

    async def shutdown(self) -> None:
        """Called once per replica after the last message."""

    async def health_check(self) -> Health:
        """Report this replica's health; published with its heartbeat."""
        return Health()

    async def get_metrics(self) -> dict[str, float]:
        """Plugin-specific figures, published with the heartbeat."""
        return {}

    async def run(self, phase: Phase, envelope: Envelope) -> Action:
        """Dispatch to the hook that serves ``phase``."""
        raise NotImplementedError(f"{type(self).__name__} serves no phase")  # pragma: no cover


class RequestProcessor(Plugin[ConfigT]):
    """Reads or changes the request before the handler."""

    category = Category.REQUEST_PROCESSOR
    phases = (Phase.REQUEST,)

    async def process_request(self, envelope: Envelope) -> Action:
        raise NotImplementedError

    async def run(self, phase: Phase, envelope: Envelope) -> Action:
        return await self.process_request(envelope)


class ResponseEnhancer(Plugin[ConfigT]):
    """Changes the response after the handler (response phase, reverse chain order)."""

    category = Category.RESPONSE_ENHANCER
    phases = (Phase.RESPONSE,)

    async def enhance_response(self, envelope: Envelope) -> Action:
        raise NotImplementedError

    async def run(self, phase: Phase, envelope: Envelope) -> Action:
        return await self.enhance_response(envelope)


class Handler(Plugin[ConfigT]):
    """Produces the response of an endpoint. A handler is critical: without it there is no answer."""

    category = Category.HANDLER
    phases = (Phase.REQUEST,)
    is_critical = True

    async def handle(self, envelope: Envelope) -> Action:
        raise NotImplementedError

    async def run(self, phase: Phase, envelope: Envelope) -> Action:
        return await self.handle(envelope)


PluginClass = type[Plugin[Any]]
