"""Runs one plugin's hooks in-process, the way the stage host would, without a broker.

The class is checked against the contract first (so a test fails with the same message a blueprint would
give), the config is validated like a blueprint's, and every envelope crosses a JSON round trip on its way in
and out, as it does through NATS: a plugin that puts something unserialisable in an envelope fails here.

    async with PluginHarness(ApiKey, {"keys": ["k1"]}) as harness:
        action = await harness.request(request(headers={"x-api-key": "nope"}))
        assert_responded(action, status=401)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from backworks.contracts.envelope import Envelope, HttpResponse
from backworks.contracts.names import Phase
from backworks.pipeline import secrets
from backworks.pipeline.contract import verify
from backworks.pipeline.executor import dispatch
from backworks.pipeline.plugin import Action, Continue, Fail, Health, Plugin, Respond
from backworks.pipeline.stores import MemoryRuntime, PluginRuntime
from backworks.sdk import factories

P = TypeVar("P", bound=Plugin[Any])


class HookTimeout(AssertionError):
    """A hook overran ``max_execution_time``: the stage host would fail the stage."""


class PluginHarness(Generic[P]):
    """One plugin instance, its hooks called in-process. Use ``async with`` to run ``startup``/``shutdown``."""

    def __init__(
        self,
        plugin: type[P],
        config: BaseModel | Mapping[str, Any] | None = None,
        *,
        instance: str = "test",
        timeout: float | None = None,
        runtime: PluginRuntime | None = None,
    ) -> None:
        verify(plugin, f"harness ({plugin.__module__})")
        self.config = factories.config(plugin, config)
        self.plugin: P = plugin(self.config, instance=instance)
        self.runtime: PluginRuntime = runtime if runtime is not None else MemoryRuntime()
        """The KV stores the plugin gets from ``self.kv(bucket)`` (see the module docstring)."""
        self.plugin.bind(self.runtime)
        self.timeout = timeout if timeout is not None else float(plugin.max_execution_time)
        """Seconds a hook may take; defaults to the plugin's ``max_execution_time``, as in the stage host."""

    async def __aenter__(self) -> PluginHarness[P]:
        await self.plugin.startup()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.plugin.shutdown()

    async def run(self, phase: Phase, envelope: Envelope) -> Action:
        """Run the plugin for ``phase`` as the stage host calls it (``executor.dispatch``), under its time limit."""
        if phase not in self.plugin.phases:
            served = ", ".join(p.value for p in self.plugin.phases) or "none"
            raise AssertionError(
                f"plugin {self.plugin.name!r} does not serve the {phase.value} phase (serves: {served})"
            )
        received = Envelope.from_json(envelope.to_json())
        try:
            async with asyncio.timeout(self.timeout):
                action = await dispatch(self.plugin, phase, received)
        except TimeoutError:
            raise HookTimeout(
                f"plugin {self.plugin.name!r} took longer than {self.timeout * 1000:.0f} ms in the {phase.value} "
                "phase: the stage host would fail this stage (raise max_execution_time or make the hook faster)"
            ) from None
        return _crossed_the_wire(self.plugin.name, action, self.plugin.secret_values)

    async def request(self, envelope: Envelope | None = None, **request: Any) -> Action:
        """Run the request phase on ``envelope`` (default: ``factories.request(**request)``)."""
        return await self.run(Phase.REQUEST, envelope or factories.request(**request))

    async def response(self, envelope: Envelope | None = None, **response: Any) -> Action:
        """Run the response phase on ``envelope`` (default: ``factories.response(**response)``)."""
        return await self.run(Phase.RESPONSE, envelope or factories.response(**response))

    async def call(self, hook: str, *args: Any) -> Any:
        """Call one hook directly (e.g. ``authenticate`` alone, or ``generate_report``)."""
        async with asyncio.timeout(self.timeout):
            return await getattr(self.plugin, hook)(*args)

    async def health(self) -> Health:
        """The plugin's ``health_check``."""
        return await self.plugin.health_check()

    async def metrics(self) -> dict[str, float]:
        """The plugin's ``get_metrics`` (what its heartbeat publishes)."""
        return await self.plugin.get_metrics()


def _crossed_the_wire(plugin: str, action: Any, secret_values: frozenset[str]) -> Action:
    """The action as the next stage would see it, after a JSON round trip."""
    try:
        if isinstance(action, Continue):
            return Continue(Envelope.from_json(action.envelope.to_json()))
        if isinstance(action, Respond):
            return Respond(HttpResponse.model_validate_json(action.response.model_dump_json()))
    except (ValidationError, TypeError, ValueError) as exc:
        raise AssertionError(f"plugin {plugin!r} returned an envelope that cannot be sent over NATS: {exc}") from exc
    if isinstance(action, Fail):
        return Fail(secrets.mask(action.reason, secret_values))  # as the stage host reports it
    raise AssertionError(
        f"plugin {plugin!r} returned {type(action).__name__}; a hook must return Continue, Respond or Fail"
    )
