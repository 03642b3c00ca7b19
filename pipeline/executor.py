"""Runs one plugin's hooks on one envelope: the isolation boundary of every hook call.

``dispatch`` calls the hooks serving a phase in contract order (the plugin never dispatches itself, as
pluggy's ``PluginManager`` calls hooks); ``execute`` runs that under the stage's time limit and circuit
breaker and turns the result into the next state of the envelope. Like an endpoint handler of nats.py's
``micro`` service, ``execute`` is the one place a hook's failure is caught, counted, masked (plugin
secrets never leave in a failure message) and judged by criticality: nothing a hook does raises past it.

A failure message is masked where it is made (``masked``): the plugin's config secrets and the request's
credentials are hidden before the message reaches the circuit breaker's record, the log, the envelope, the event
stream or a dead letter. The exception's text itself goes to the log and the envelope; the gateway shows it to
the client only when the blueprint sets ``gateway.expose_errors``.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog

from backworks.contracts.envelope import Envelope, Timing
from backworks.contracts.names import Phase
from backworks.contracts.types import FailureKind
from backworks.pipeline import credentials, secrets
from backworks.pipeline.errors import BreakerOpen
from backworks.pipeline.plugin import Action, Alert, Category, Continue, Fail, Monitoring, Plugin, Respond, implements

log = structlog.get_logger("backworks.executor")

T = TypeVar("T")


class Breaker(Protocol):
    """What the executor needs from the fleet's circuit breakers (``backworks.pipeline.breakers.FleetBreakers``)."""

    async def call(self, instance: str, fn: Callable[[], Awaitable[T]]) -> T: ...


class ResourceExhausted(Exception):
    """The hook used up a resource of the whole replica (not only its own call): the replica must be replaced."""

    def __init__(self, resource: str) -> None:
        super().__init__(resource)
        self.resource = resource


class HookFailed(Exception):
    """The hook ran and did not succeed (raised, overran, returned ``Fail``): what the breaker counts."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """What happened to the envelope at this stage."""

    envelope: Envelope
    failure: FailureKind | None = None
    message: str = ""
    exhausted: str | None = None
    """The replica resource the hook used up (``memory``, ``open files``): the process should be restarted."""


async def dispatch(plugin: Plugin[Any], phase: Phase, envelope: Envelope) -> Action:
    """Call the hooks of ``plugin`` serving ``phase``, in contract order; the first that does not continue ends it.

    Exceptions from hooks propagate unchanged: ``execute`` (or a test) decides what they mean.
    """
    action: Any = Continue(envelope)  # whatever the hook returned: ``run_hook`` checks it
    for hook in plugin.phase_hooks.get(phase, ()):
        action = await getattr(plugin, hook)(action.envelope)
        if not isinstance(action, Continue):
            return action  # type: ignore[no-any-return]  # a hook's result, checked by run_hook
    if isinstance(plugin, Monitoring) and implements(plugin, "generate_alerts"):
        await raise_alerts(plugin, action.envelope)
    result: Action = action
    return result


async def raise_alerts(plugin: Monitoring[Any], envelope: Envelope) -> None:
    """Run ``generate_alerts`` after ``collect_metrics``: log each alert, attach it to the envelope, count it."""
    alerts = await plugin.generate_alerts(envelope)
    if not isinstance(alerts, list) or not all(isinstance(alert, Alert) for alert in alerts):
        raise TypeError(f"generate_alerts must return a list of Alert, got {type(alerts).__name__}")
    for alert in alerts:
        plugin.alerts_raised += 1
        log.warning(
            "alert",
            instance=plugin.instance,
            alert=alert.name,
            severity=alert.severity.value,
            message=alert.message,
            labels=dict(alert.labels),
        )
        record = {"source": plugin.instance, "name": alert.name, "severity": alert.severity.value}
        envelope.annotations.setdefault("alerts", []).append({**record, "message": alert.message})


def masked(plugin: Plugin[Any], envelope: Envelope, message: str) -> str:
    """``message`` without the plugin's config secrets or the request's credentials."""
    return secrets.mask(message, plugin.secret_values.union(credentials.values(envelope)))


async def run_hook(plugin: Plugin[Any], phase: Phase, envelope: Envelope, timeout: float) -> Continue | Respond:
    """Run the hooks under ``timeout``; anything but success raises ``HookFailed`` (or ``MemoryError``)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            action = await dispatch(plugin, phase, envelope)
    except TimeoutError:
        raise HookFailed(FailureKind.TIMEOUT, f"hook took longer than {timeout * 1000:.0f} ms") from None
    except MemoryError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise ResourceExhausted("open files") from exc
        message = masked(plugin, envelope, f"{type(exc).__name__}: {exc}")
        log.warning("plugin hook raised", plugin=plugin.instance, error=message, exc_info=True)
        raise HookFailed(FailureKind.ERROR, message) from exc
    except Exception as exc:
        message = masked(plugin, envelope, f"{type(exc).__name__}: {exc}")
        log.warning("plugin hook raised", plugin=plugin.instance, error=message, exc_info=True)
        raise HookFailed(FailureKind.ERROR, message) from exc
    elapsed = time.perf_counter() - started
    if elapsed > timeout:
        # A hook that blocked the event loop cannot be interrupted; it still overran its limit.
        raise HookFailed(FailureKind.TIMEOUT, f"hook took {elapsed * 1000:.0f} ms, longer than {timeout * 1000:.0f} ms")
    if isinstance(action, Fail):
        raise HookFailed(FailureKind.ERROR, masked(plugin, envelope, action.reason))
    if isinstance(action, Continue):
        if plugin.category is Category.HANDLER and action.envelope.response is None:
            raise HookFailed(FailureKind.ERROR, "handler returned no response")
        return action
    if isinstance(action, Respond):
        return action
    raise HookFailed(FailureKind.INVALID, f"hook returned {type(action).__name__}, expected Continue, Respond or Fail")


async def execute(
    plugin: Plugin[Any],
    phase: Phase,
    raw: bytes,
    envelope: Envelope,
    timeout: float,
    replica: str,
    attempt: int,
    breaker: Breaker | None = None,
) -> Outcome:
    """Run the current stage's hooks and advance the envelope; never raises for plugin failures."""
    stage = envelope.itinerary[envelope.cursor]
    started = time.perf_counter()
    failure: FailureKind | None = None
    message = ""
    exhausted: str | None = None
    try:
        if breaker is None:
            action = await run_hook(plugin, phase, envelope, timeout)
        else:
            action = await breaker.call(stage.instance, lambda: run_hook(plugin, phase, envelope, timeout))
    except HookFailed as exc:
        failure, message = exc.kind, exc.message
    except BreakerOpen as exc:
        failure, message = FailureKind.UNAVAILABLE, str(exc)
    except MemoryError:
        failure, message, exhausted = FailureKind.ERROR, "hook exceeded the replica's memory limit", "memory"
    except ResourceExhausted as exc:
        failure, message, exhausted = FailureKind.ERROR, f"hook exhausted the replica's {exc.resource}", exc.resource
    else:
        if isinstance(action, Respond):
            envelope.response = action.response
            if phase is Phase.REQUEST:
                envelope.cursor = envelope.first_response_stage() - 1
        else:
            envelope = action.envelope
    elapsed_ms = (time.perf_counter() - started) * 1000
    if failure:
        # Masked where made (run_hook) already; a breaker's reason read back from the fleet is masked here.
        message = masked(plugin, envelope, message)
        # The hook may have changed the envelope before failing: go on from what this stage received.
        envelope = Envelope.from_json(raw)
        envelope.fail_stage(failure, message)
    else:
        envelope.cursor += 1
    envelope.timings.append(Timing(stage=stage.label, ms=round(elapsed_ms, 3), replica=replica, attempt=attempt))
    return Outcome(envelope, failure, message, exhausted)
