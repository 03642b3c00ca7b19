"""``FleetBreakers``: the circuit breakers of every plugin instance, shared by the whole fleet through NATS KV.

The semantics are described in :mod:`backworks.pipeline.breakers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from pydantic import ValidationError

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.breakers import (
    FAILED,
    SLOW,
    BreakerState,
    ProbeRecord,
    StateRecord,
    StoredState,
    key_token,
    probe_key,
    state_key,
)
from backworks.pipeline.breakers.mirror import BucketMirror
from backworks.pipeline.breakers.view import FleetView, utc
from backworks.pipeline.errors import BreakerOpen
from backworks.pipeline.tasks import cancel

log = structlog.get_logger("backworks.breakers")

MIN_PROBE_LEASE = 1.0
"""An unfinished probe holds its slot at most ``max(wait_in_open, MIN_PROBE_LEASE)`` seconds."""
STOP_TIMEOUT = 1.0
"""Seconds ``stop`` gives transitions in flight."""
ADMIT_ATTEMPTS = 3

T = TypeVar("T")
Listener = Callable[[str, BreakerState, BreakerState], None]
"""Called with ``(instance, old, new)`` on every state change this process notices."""


@dataclass(frozen=True)
class Transition:
    """A state change this process is the fleet's one witness of (see ``FleetBreakers.on_transition``)."""

    instance: str
    old: BreakerState
    new: BreakerState
    generation: int
    reason: str
    at: float
    """Epoch seconds."""
    reset_at: float | None = None


TransitionListener = Callable[[Transition], None]


@dataclass(frozen=True)
class _Admission:
    """A call let through: in which generation, and with which probe slot when half-open."""

    instance: str
    generation: int
    slot: int | None = None
    revision: int = 0
    claimed_at: float = 0.0


class FleetBreakers:
    """The circuit breakers of the given plugin instances, shared with every process of the fleet."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: dict[str, BreakerSettings],
        replica: str,
        owned: frozenset[str] | None = None,
    ) -> None:
        """``owned``: the instances whose breaker records this process may write (None: all). A stage host owns
        its instance: the broker refuses its writes to any other instance's keys, so it never trips another's."""
        self.replica = replica
        self.owned = owned
        self._me = key_token(replica)
        self._clock: Callable[[], float] = time.time  # epoch seconds: what KV records hold, the same in every zone
        self._views = {name: FleetView(name, setting, self._me) for name, setting in settings.items()}
        self._mirror = BucketMirror(
            js, self._views, self._me, self._clock, self._state_changed, self._window_changed, self._probe_changed
        )
        self._noticed = {name: BreakerState.CLOSED for name in settings}
        self._listeners: list[Listener] = []
        self._writers: list[TransitionListener] = []
        self._transitions: dict[tuple[str, int], asyncio.Task[bool]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed: dict[str, _Admission] = {}
        """The admission of a call while closed, per instance (the same for every call of a generation)."""

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the current state of every breaker, then keep it fresh with a KV watch."""
        await self._mirror.start()

    async def stop(self) -> None:
        """Finish pending writes (briefly), stop watching, and remove this process's window keys."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT)
        await cancel(self._tasks)
        await self._mirror.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def flush(self) -> None:
        """Wait until this process's window records are written to KV."""
        await self._mirror.flush()

    def add(self, settings: dict[str, BreakerSettings]) -> None:
        """Breakers of instances a new blueprint revision added; their records arrive through the running watch."""
        for name, setting in settings.items():
            if name not in self._views:
                self._views[name] = FleetView(name, setting, self._me)
                self._noticed[name] = BreakerState.CLOSED

    # --- what forwarders and stage hosts ask ---------------------------------------------------------------------

    def state(self, instance: str) -> BreakerState:
        return self._view(instance).effective(self._clock())

    def allow(self, instance: str) -> bool:
        """Whether to send a call at all: false while open, or half-open with no probe slot free in the view."""
        view = self._view(instance)
        now = self._clock()
        state = view.effective(now)
        if state is BreakerState.HALF_OPEN:
            return bool(view.free_slots(now, self._lease(view)))
        return state is BreakerState.CLOSED

    async def call(self, instance: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` if the breaker lets it (else raise ``BreakerOpen``), record its outcome, re-raise its error."""
        view = self._view(instance)
        if view.effective(self._clock()) is BreakerState.CLOSED:  # almost every call: admitted without a coroutine
            admission = self._closed_admission(view)
        else:
            admission = await self._admit(instance)
        started = time.monotonic()
        try:
            result = await fn()
        except Exception as error:
            await self._settle(admission, time.monotonic() - started, error)
            raise  # the tripping call too: the caller sees the plugin's own failure
        except BaseException:  # cancelled or interrupted: not an outcome of the plugin
            self._spawn(self._release(admission))
            raise
        seconds = time.monotonic() - started
        if admission.slot is not None:
            await self._settle(admission, seconds, None)
        elif (reason := self._count_closed(admission, seconds, None)) is not None:  # a coroutine only to open it
            await self._open(admission, reason)
        return result

    async def record(self, instance: str, seconds: float, error: BaseException | str | None = None) -> None:
        """A call made without ``call`` took ``seconds`` and failed with ``error`` (None: succeeded).

        Counts only while closed: while open or half-open only admitted probes decide.
        """
        view = self._view(instance)
        if view.effective(self._clock()) is BreakerState.CLOSED:
            await self._count(view, self._outcome(view, seconds, error), error)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every breaker as this process sees it, with its window's rates, for ``/_backworks/health``."""
        now = self._clock()
        report: dict[str, dict[str, object]] = {}
        for name, view in self._views.items():
            opened_at, reset_at = utc(view.opened_at), utc(view.reset_at)
            rates, settings = view.rates(now), view.settings
            report[name] = {
                "state": view.effective(now).value,
                "window": f"{settings.sliding_window.type.value}:{settings.sliding_window.size}",
                "calls": rates.calls,
                "minimum_calls": settings.minimum_calls,
                "failure_rate": round(rates.failure_rate, 1),
                "failure_rate_threshold": settings.failure_rate,
                "slow_call_rate": round(rates.slow_call_rate, 1),
                "slow_call_rate_threshold": settings.slow_call_rate,
                "opened_at": opened_at.isoformat() if opened_at else None,
                "reset_at": reset_at.isoformat() if reset_at else None,
                "probes": settings.permitted_calls_in_half_open - len(view.free_slots(now, self._lease(view))),
                "permitted_calls_in_half_open": settings.permitted_calls_in_half_open,
                "generation": view.generation,
                "reason": view.state.record.reason if view.state else "",
            }
        return report

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(instance, old, new)`` on every state change this process notices."""
        self._listeners.append(listener)

    def on_transition(self, listener: TransitionListener) -> None:
        """Call ``listener`` for each transition this process wrote, so that the fleet reports each one once.

        Closed -> open and half-open -> closed/open: this process's compare-and-set of the state record won.
        Open -> half-open (derived from time, never written): this process wrote the open record and its clock
        reached ``reset_at`` (lost if that process stopped meanwhile)."""
        self._writers.append(listener)

    # --- admission and outcomes ---------------------------------------------------------------------------------

    async def _admit(self, instance: str) -> _Admission:
        view = self._view(instance)
        for _ in range(ADMIT_ATTEMPTS):
            generation = view.generation
            state = view.effective(self._clock())
            if state is BreakerState.CLOSED:
                return self._closed_admission(view)
            if state is BreakerState.OPEN:
                raise self._refusal(view, "failing; calls are refused until wait_in_open_ms has passed")
            admission = await self._claim_probe(view, generation)
            if admission is None:
                if view.probe_rates() is not None:  # every probe is in: decide (again, if a write was lost)
                    self._spawn(self._maybe_decide(instance))
                permitted = view.settings.permitted_calls_in_half_open
                raise self._refusal(view, f"all {permitted} probe(s) of this half-open period are taken")
            if view.generation == generation:
                return admission
            self._spawn(self._release(admission))  # the state moved on while we claimed: look again
        raise self._refusal(view, "its state kept changing while the call was being admitted")

    def _closed_admission(self, view: FleetView) -> _Admission:
        """The admission of a call while closed: immutable, so one per instance and generation serves every call."""
        admission = self._closed.get(view.instance)
        if admission is None or admission.generation != view.generation:
            admission = self._closed[view.instance] = _Admission(view.instance, view.generation)
        return admission

    async def _settle(self, admission: _Admission, seconds: float, error: BaseException | None) -> None:
        if admission.slot is None:
            if (reason := self._count_closed(admission, seconds, error)) is not None:
                await self._open(admission, reason)
            return
        try:
            view = self._views[admission.instance]
            if view.generation != admission.generation:
                return  # admitted in a generation that is over: its outcome was decided already
            await self._report_probe(view, admission, self._outcome(view, seconds, error))
        except Exception:
            log.exception("breaker bookkeeping failed", instance=admission.instance, replica=self.replica)

    def _count_closed(self, admission: _Admission, seconds: float, error: BaseException | None) -> str | None:
        """Count the outcome of a call admitted while closed (without a coroutine: ~4 µs of every message); why the
        breaker must open now, or None. Never raises: bookkeeping must not fail the call."""
        try:
            view = self._views[admission.instance]
            if view.generation != admission.generation:
                return None  # admitted in a generation that is over: its outcome was decided already
            return self._counted(view, self._outcome(view, seconds, error), error)
        except Exception:
            log.exception("breaker bookkeeping failed", instance=admission.instance, replica=self.replica)
            return None

    async def _open(self, admission: _Admission, reason: str) -> None:
        try:
            await self._transition(admission.instance, admission.generation, StoredState.OPEN, reason)
        except Exception:
            log.exception("breaker bookkeeping failed", instance=admission.instance, replica=self.replica)

    def _outcome(self, view: FleetView, seconds: float, error: BaseException | str | None) -> int:
        slow = seconds * 1000 >= view.settings.slow_call_duration_ms
        return (FAILED if error is not None else 0) | (SLOW if slow else 0)

    async def _count(self, view: FleetView, outcome: int, error: BaseException | str | None) -> None:
        reason = self._counted(view, outcome, error)
        if reason is not None:
            await self._transition(view.instance, view.generation, StoredState.OPEN, reason)

    def _counted(self, view: FleetView, outcome: int, error: BaseException | str | None) -> str | None:
        """Count one outcome in this process's window; why the closed breaker must open now, or None."""
        view.own.add(self._clock(), outcome)
        self._mirror.mark_dirty(view.instance, urgent=outcome != 0)
        return self._trip_reason(view, _describe(error) if error is not None else "")

    def _trip_reason(self, view: FleetView, last_error: str = "") -> str | None:
        if view.effective(self._clock()) is not BreakerState.CLOSED:
            return None
        reason = view.trip_reason(self._clock())
        if reason is not None and last_error:
            reason += f"; last error: {last_error}"
        return reason

    async def _maybe_trip(self, instance: str, last_error: str = "") -> None:
        view = self._views[instance]
        reason = self._trip_reason(view, last_error)
        if reason is not None:
            await self._transition(instance, view.generation, StoredState.OPEN, reason)

    async def _maybe_decide(self, instance: str) -> None:
        """Close or reopen a half-open breaker once every permitted probe of its generation has an outcome."""
        view = self._views[instance]
        rates = view.probe_rates()
        if rates is None or view.effective(self._clock()) is not BreakerState.HALF_OPEN:
            return
        verdict = rates.verdict(view.settings)
        if verdict is None:
            reason = f"probes passed: failure rate {rates.failure_rate:.0f}%, slow {rates.slow_call_rate:.0f}%"
            await self._transition(instance, view.generation, StoredState.CLOSED, reason)
        else:
            await self._transition(instance, view.generation, StoredState.OPEN, f"probes failed: {verdict}")

    async def _transition(self, instance: str, generation: int, target: StoredState, reason: str) -> bool:
        """Move the breaker out of ``generation`` once: concurrent callers in this process share one CAS."""
        key = (instance, generation)
        task = self._transitions.get(key)
        if task is None:
            task = self._spawn(self._cas_state(instance, generation, target, reason))
            self._transitions[key] = task
            task.add_done_callback(lambda _: self._transitions.pop(key, None))
        return await asyncio.shield(task)

    async def _cas_state(self, instance: str, generation: int, target: StoredState, reason: str) -> bool:
        view, kv = self._views[instance], self._mirror.kv
        if view.generation != generation or kv is None:
            return False
        now = self._clock()
        before = view.effective(now)
        opening = target is StoredState.OPEN
        record = StateRecord(
            state=target,
            generation=generation + 1,
            opened_at=now if opening else None,
            reset_at=now + view.wait_in_open if opening else None,
            at=now,
            by=self._me,
            reason=reason,
        )
        data = record.model_dump_json().encode()
        try:
            if view.state is None:
                revision = await kv.create(state_key(instance), data)
            else:
                revision = await kv.update(state_key(instance), data, last=view.state.revision)
        except KeyWrongLastSequenceError:
            await self._refresh_state(instance)  # another process moved it first: adopt its state now
            return False
        except Exception as exc:
            log.warning("cannot write breaker transition", instance=instance, to=target.value, error=repr(exc))
            return False
        if view.apply_state(record, revision):
            self._state_changed(instance)
        emit = log.warning if opening else log.info
        emit("breaker " + ("opened" if opening else "closed"), instance=instance, reason=reason, replica=self.replica)
        after = BreakerState.OPEN if opening else BreakerState.CLOSED
        self._wrote(Transition(instance, before, after, record.generation, reason, now, record.reset_at))
        return True

    async def _refresh_state(self, instance: str) -> None:
        if self._mirror.kv is None:
            return
        try:
            entry = await self._mirror.kv.get(state_key(instance))
            record = StateRecord.model_validate_json(entry.value or b"")
        except (NotFoundError, ValidationError):
            return
        except Exception as exc:
            log.warning("cannot read breaker state", instance=instance, error=repr(exc))
            return
        if self._views[instance].apply_state(record, entry.revision or 0):
            self._state_changed(instance)

    # --- half-open probe slots ---------------------------------------------------------------------------------

    async def _claim_probe(self, view: FleetView, generation: int) -> _Admission | None:
        kv = self._mirror.kv
        if kv is None:
            return None
        now = self._clock()
        record = ProbeRecord(generation=generation, writer=self._me, claimed_at=now)
        data = record.model_dump_json().encode()
        for slot in range(view.settings.permitted_calls_in_half_open):
            if not view.slot_is_free(slot, now, self._lease(view)):
                continue  # looked at again for each slot: the view changes while we await a claim
            held = view.probes.get(slot)
            try:
                if held is None:
                    revision = await kv.create(probe_key(view.instance, slot), data)
                else:
                    revision = await kv.update(probe_key(view.instance, slot), data, last=held.revision)
            except KeyWrongLastSequenceError:
                continue  # someone else got this slot
            except Exception as exc:
                log.warning("cannot claim a probe slot", instance=view.instance, error=repr(exc))
                return None
            view.apply_probe(slot, record, revision)
            return _Admission(view.instance, generation, slot, revision, now)
        return None

    async def _report_probe(self, view: FleetView, admission: _Admission, outcome: int) -> None:
        """Write the probe's outcome into its slot (CAS: a slot whose lease ran out may be someone else's now)."""
        kv, slot = self._mirror.kv, admission.slot
        if kv is None or slot is None:
            return
        record = ProbeRecord(
            generation=admission.generation, writer=self._me, claimed_at=admission.claimed_at, outcome=outcome
        )
        try:
            revision = await kv.update(
                probe_key(view.instance, slot), record.model_dump_json().encode(), last=admission.revision
            )
        except KeyWrongLastSequenceError:
            return  # the slot was taken over after its lease: that probe's outcome counts instead
        view.apply_probe(slot, record, revision)
        await self._maybe_decide(view.instance)

    async def _release(self, admission: _Admission) -> None:
        if admission.slot is None or self._mirror.kv is None:
            return
        view = self._views[admission.instance]
        held = view.probes.get(admission.slot)
        if held is not None and held.revision == admission.revision:
            del view.probes[admission.slot]
        with contextlib.suppress(Exception):  # a slot left behind frees itself when its lease runs out
            await self._mirror.kv.delete(probe_key(admission.instance, admission.slot), last=admission.revision)

    def _refusal(self, view: FleetView, detail: str) -> BreakerOpen:
        now = self._clock()
        reset_at = view.reset_at
        retry_after = reset_at - now if reset_at is not None and reset_at > now else None
        return BreakerOpen(view.instance, view.effective(now).value, detail, retry_after)

    # --- local reactions to changes ---------------------------------------------------------------------------

    def _state_changed(self, instance: str) -> None:
        self._notice(instance)
        timer = self._timers.pop(instance, None)
        if timer is not None:
            timer.cancel()
        reset_at = self._views[instance].reset_at
        if reset_at is not None and reset_at > self._clock():
            delay = reset_at - self._clock()
            self._timers[instance] = asyncio.get_running_loop().call_later(delay, self._state_changed, instance)

    def _window_changed(self, instance: str) -> None:
        if self.owned is not None and instance not in self.owned:
            return  # that instance's own replicas see the same windows and trip it
        if self._views[instance].trip_reason(self._clock()) is not None:
            self._spawn(self._maybe_trip(instance))

    def _probe_changed(self, instance: str) -> None:
        if self.owned is not None and instance not in self.owned:
            return  # decided by the instance's own replicas, which ran the probes
        if self._views[instance].probe_rates() is not None:
            self._spawn(self._maybe_decide(instance))

    def _notice(self, instance: str) -> None:
        old, new = self._noticed[instance], self.state(instance)
        if old is new:
            return
        self._noticed[instance] = new
        log.info("breaker state changed", instance=instance, old=old.value, new=new.value, replica=self.replica)
        stored = self._views[instance].state
        if new is BreakerState.HALF_OPEN and stored is not None and stored.record.by == self._me:
            at = stored.record.reset_at or self._clock()
            self._wrote(Transition(instance, BreakerState.OPEN, new, stored.record.generation, "", at))
        for listener in self._listeners:
            try:
                listener(instance, old, new)
            except Exception:
                log.exception("breaker listener failed", instance=instance, replica=self.replica)

    def _wrote(self, transition: Transition) -> None:
        for listener in self._writers:
            try:
                listener(transition)
            except Exception:
                log.exception("breaker transition listener failed", instance=transition.instance)

    # --- small helpers ---------------------------------------------------------------------------------------

    def _view(self, instance: str) -> FleetView:
        try:
            return self._views[instance]
        except KeyError:
            known = ", ".join(sorted(self._views)) or "none"
            raise KeyError(
                f"no circuit breaker for plugin instance {instance!r}: pass its BreakerSettings to FleetBreakers"
                f" (known: {known})"
            ) from None

    def _lease(self, view: FleetView) -> float:
        return max(view.wait_in_open, MIN_PROBE_LEASE)

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _describe(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


__all__ = ["BreakerOpen", "BreakerState", "FleetBreakers", "Listener", "Transition", "TransitionListener"]
