"""Fleet-shared circuit breakers against a real nats-server: each FleetBreakers has its own connection, as two
processes of the fleet would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from typing import Any, NoReturn

import aiobreaker.circuitbreaker  # type: ignore[import-untyped]  # no type hints
import aiobreaker.state  # type: ignore[import-untyped]  # same
import pytest
from aiobreaker import CircuitBreakerError, CircuitBreakerListener
from nats.aio.client import Client
from nats.js.errors import NoKeysError

from backworks.contracts.blueprint import BreakerSettings
from backworks.contracts.breakers import ProbeRecord, StateRecord, probe_key, state_key
from backworks.contracts.errors import BackworksError
from backworks.contracts.names import BREAKERS_BUCKET
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import broker
from backworks.pipeline.breakers import BreakerState, FleetBreakers
from backworks.pipeline.breakers import fleet as fleet_module
from backworks.pipeline.errors import BreakerOpen, PipelineError
from tests.waiting import eventually

INSTANCE = "auth"
MakeBreakers = Callable[[dict[str, BreakerSettings], str], Awaitable[FleetBreakers]]  # (settings, replica)


def settings(threshold: int = 3, reset_ms: int = 10_000, probes: int = 1) -> dict[str, BreakerSettings]:
    return {
        INSTANCE: BreakerSettings(failure_threshold=threshold, reset_timeout_ms=reset_ms, half_open_probes=probes),
        "other": BreakerSettings(),
    }


@pytest.fixture
async def make_breakers(nats_server: EmbeddedNats, nats_client: Client) -> AsyncIterator[MakeBreakers]:
    """Start FleetBreakers, each on its own NATS connection (``nats_client`` has declared the bucket)."""
    made: list[tuple[FleetBreakers, Client]] = []

    async def make(config: dict[str, BreakerSettings], replica: str) -> FleetBreakers:
        client = await broker.connect([nats_server.url], name=replica)
        fleet = FleetBreakers(broker.jetstream(client), config, replica)
        made.append((fleet, client))
        await fleet.start()
        return fleet

    yield make
    for fleet, client in reversed(made):
        await fleet.stop()
        await client.close()


class StateChanges(CircuitBreakerListener):  # type: ignore[misc]  # its base class is untyped (aiobreaker)
    """Records (perf_counter, instance, new state) for every change a FleetBreakers notices."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []
        self.changed = asyncio.Event()

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        self.seen.append((time.perf_counter(), breaker.name, new.state.name))
        self.changed.set()

    async def wait_for(self, state: str, timeout: float = 5.0) -> float:
        async with asyncio.timeout(timeout):
            while True:
                for at, _, name in self.seen:
                    if name == state:
                        return at
                self.changed.clear()
                await self.changed.wait()


class Gate:
    """A plugin call that runs until released: counts how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.error: BaseException | None = None

    async def __call__(self) -> str:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            if self.error is not None:
                raise self.error
            return "ok"
        finally:
            self.running -= 1


async def fail(error: BaseException) -> None:
    await asyncio.sleep(0)
    raise error


async def trip(fleet: FleetBreakers, times: int) -> None:
    for index in range(times):
        await fleet.record_failure(INSTANCE, RuntimeError(f"failure {index}"))


# Conditions to wait for, bound to the loop's current fleet or value with functools.partial.
def failures_are(fleet: FleetBreakers, failures: int) -> bool:
    return fleet.snapshot()[INSTANCE]["failures"] == failures


def generation_is(fleet: FleetBreakers, generation: int) -> bool:
    return fleet.snapshot()[INSTANCE]["generation"] == generation


def state_is(fleet: FleetBreakers, state: BreakerState) -> bool:
    return fleet.state(INSTANCE) is state


def finished(tasks: list[asyncio.Task[Any]], count: int) -> bool:
    return sum(task.done() for task in tasks) == count


async def test_failures_recorded_on_one_process_open_the_breaker_for_another(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=3), "replica-a")
    b = await make_breakers(settings(threshold=3), "gateway-b")
    changes = StateChanges()
    b.add_listener(changes)

    await trip(a, 2)
    await eventually(lambda: b.snapshot()[INSTANCE]["failures"] == 2)
    assert b.state(INSTANCE) is BreakerState.CLOSED and b.allow(INSTANCE)

    await a.record_failure(INSTANCE, "third")
    written = time.perf_counter()  # the CAS that opened it has been acknowledged
    seen = await changes.wait_for("OPEN", timeout=10.0 / 2)
    # Pushed by the KV watch (~1 ms measured): it must arrive well inside the 10 s the breaker stays open.
    assert seen - written < 10.0 / 2, f"B saw the open breaker {1000 * (seen - written):.1f} ms after A wrote it"

    for fleet in (a, b):
        assert fleet.state(INSTANCE) is BreakerState.OPEN
        assert not fleet.allow(INSTANCE)
        assert fleet.allow("other")
    calls: list[str] = []

    async def plugin() -> None:
        calls.append("called")

    with pytest.raises(BreakerOpen) as refused:
        await b.call(INSTANCE, plugin)
    assert calls == []
    assert refused.value.instance == INSTANCE and refused.value.state == "open"
    assert refused.value.retry_after is not None and 10.0 / 2 < refused.value.retry_after <= 10.0
    assert isinstance(refused.value, PipelineError) and isinstance(refused.value, BackworksError)
    snapshot = b.snapshot()[INSTANCE]
    assert snapshot["state"] == "open" and snapshot["generation"] == 1
    assert "3 consecutive failures" in str(snapshot["reason"]) and "third" in str(snapshot["reason"])


async def test_a_success_anywhere_resets_the_fleet_wide_streak(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=4), "replica-a")
    b = await make_breakers(settings(threshold=4), "replica-b")

    await trip(a, 2)
    await trip(b, 1)
    for fleet in (a, b):
        await eventually(partial(failures_are, fleet, 3))
    await b.record_success(INSTANCE)
    for fleet in (a, b):
        await eventually(partial(failures_are, fleet, 0))

    # The three failures before the success stay forgotten: three more keep it closed, a fourth opens it.
    await trip(a, 2)
    await trip(b, 1)
    await eventually(lambda: a.snapshot()[INSTANCE]["failures"] == 3 and b.snapshot()[INSTANCE]["failures"] == 3)
    assert a.state(INSTANCE) is BreakerState.CLOSED
    await b.record_failure(INSTANCE, "fourth")
    await eventually(lambda: a.state(INSTANCE) is BreakerState.OPEN)


async def test_a_healthy_stream_of_successes_writes_nothing(make_breakers: MakeBreakers, nats_client: Client) -> None:
    a = await make_breakers(settings(), "replica-a")

    async def plugin() -> str:
        return "ok"

    for _ in range(200):
        assert await a.call(INSTANCE, plugin) == "ok"
        await a.record_success(INSTANCE)
    await a.flush()
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    with pytest.raises(NoKeysError):
        await kv.keys()


async def test_the_tripping_call_raises_the_original_error(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=2), "replica-a")
    errors = [ValueError("first"), ConnectionError("second")]
    for error in errors:
        with pytest.raises(type(error)) as raised:
            await a.call(INSTANCE, partial(fail, error))
        assert raised.value is error
        assert not isinstance(raised.value, CircuitBreakerError)
    assert a.state(INSTANCE) is BreakerState.OPEN

    called = False

    async def plugin() -> None:
        nonlocal called
        called = True

    with pytest.raises(BreakerOpen):
        await a.call(INSTANCE, plugin)
    assert not called


async def test_concurrent_failures_on_two_processes_open_the_breaker_exactly_once(
    make_breakers: MakeBreakers, nats_client: Client
) -> None:
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    watcher = await kv.watch(state_key(INSTANCE))
    a = await make_breakers(settings(threshold=5), "replica-a")
    b = await make_breakers(settings(threshold=5), "replica-b")

    calls = [fleet.call(INSTANCE, lambda: fail(RuntimeError("down"))) for fleet in (a, b) for _ in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    # And a second storm while it is open: refused, and it must not open "again".
    results = await asyncio.gather(
        *[fleet.call(INSTANCE, lambda: fail(RuntimeError("down"))) for fleet in (a, b) for _ in range(20)],
        *[fleet.record_failure(INSTANCE, "late") for fleet in (a, b) for _ in range(20)],
        return_exceptions=True,
    )
    assert all(isinstance(result, BreakerOpen) for result in results[:40])
    await a.flush()
    await b.flush()
    await asyncio.sleep(0.2)  # room for a second transition to show up

    writes: list[StateRecord] = []
    while True:
        try:
            entry = await watcher.updates(timeout=0.2)  # type: ignore[no-untyped-call]  # nats-py: unannotated
        except Exception:
            break
        if entry is not None:
            writes.append(StateRecord.model_validate_json(entry.value))
    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: unannotated
    assert [(w.state.value, w.generation) for w in writes] == [("open", 1)]
    assert a.snapshot()[INSTANCE]["generation"] == b.snapshot()[INSTANCE]["generation"] == 1


async def test_half_open_admits_exactly_the_configured_probes_across_the_fleet(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=1, reset_ms=200, probes=2), "replica-a")
    b = await make_breakers(settings(threshold=1, reset_ms=200, probes=2), "gateway-b")
    await a.record_failure(INSTANCE, "down")
    # Two rounds whose probes fail (slots of an older generation are taken over with CAS), then one that succeeds.
    for round_ in range(3):
        await eventually(lambda: a.state(INSTANCE) is b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)
        assert a.allow(INSTANCE) and b.allow(INSTANCE)
        gate = Gate()
        gate.error = RuntimeError(f"probe of round {round_} failed") if round_ < 2 else None
        calls = [asyncio.create_task(fleet.call(INSTANCE, gate)) for _ in range(30) for fleet in (a, b)]
        await eventually(partial(finished, calls, 58))
        refused = [task.exception() for task in calls if task.done()]
        assert all(isinstance(error, BreakerOpen) and error.state == "half-open" for error in refused)
        assert gate.running == 2
        await eventually(lambda: not a.allow(INSTANCE) and not b.allow(INSTANCE))
        assert a.snapshot()[INSTANCE]["probes_in_flight"] == b.snapshot()[INSTANCE]["probes_in_flight"] == 2

        gate.release.set()
        results = await asyncio.gather(*[task for task in calls if not task.done()], return_exceptions=True)
        assert gate.most == 2
        assert results == ([gate.error, gate.error] if gate.error else ["ok", "ok"])
        # The first result decides, once: each round moves the generation by exactly one.
        expected = round_ + 2
        await eventually(partial(generation_is, a, expected))
        await eventually(partial(generation_is, b, expected))
    for fleet in (a, b):
        assert fleet.state(INSTANCE) is BreakerState.CLOSED
        assert fleet.allow(INSTANCE)


async def test_a_failed_probe_reopens_the_breaker_everywhere(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=1, reset_ms=300), "replica-a")
    b = await make_breakers(settings(threshold=1, reset_ms=300), "replica-b")
    await a.record_failure(INSTANCE, "down")
    first_opened = a.snapshot()[INSTANCE]["opened_at"]
    await eventually(lambda: b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)

    error = TimeoutError("probe hung")
    with pytest.raises(TimeoutError) as raised:
        await b.call(INSTANCE, lambda: fail(error))
    assert raised.value is error
    for fleet in (a, b):
        await eventually(partial(state_is, fleet, BreakerState.OPEN))
        assert not fleet.allow(INSTANCE)
        snapshot = fleet.snapshot()[INSTANCE]
        assert snapshot["generation"] == 2
        assert str(snapshot["opened_at"]) > str(first_opened)
        assert "probe failed: TimeoutError: probe hung" in str(snapshot["reason"])
    # Open for a whole new reset timeout, then half-open again.
    await eventually(lambda: a.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)


async def test_a_cancelled_probe_gives_its_slot_back(
    make_breakers: MakeBreakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = 10.0
    monkeypatch.setattr(fleet_module, "MIN_PROBE_LEASE", lease)
    a = await make_breakers(settings(threshold=1, reset_ms=200), "replica-a")
    b = await make_breakers(settings(threshold=1, reset_ms=200), "gateway-b")
    await a.record_failure(INSTANCE, "down")
    await eventually(lambda: b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)
    gate = Gate()
    probe = asyncio.create_task(a.call(INSTANCE, gate))
    await eventually(lambda: gate.running == 1 and not b.allow(INSTANCE))
    probe.cancel()
    started = time.monotonic()
    await eventually(lambda: b.allow(INSTANCE), timeout=lease / 4)  # well before the lease runs out
    assert time.monotonic() - started < lease / 4
    assert b.state(INSTANCE) is BreakerState.HALF_OPEN  # a cancelled call is no result


async def test_a_probe_lost_with_its_process_frees_its_slot_after_the_lease(
    make_breakers: MakeBreakers, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_module, "MIN_PROBE_LEASE", 0.4)
    b = await make_breakers(settings(threshold=1, reset_ms=200), "replica-b")
    await b.record_failure(INSTANCE, "down")
    await eventually(lambda: b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)
    # A process claimed the only slot, then died without a result.
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    ghost = ProbeRecord(generation=1, writer="killed-replica", claimed_at=time.time())
    await kv.create(probe_key(INSTANCE, 0), ghost.model_dump_json().encode())
    await eventually(lambda: not b.allow(INSTANCE))
    with pytest.raises(BreakerOpen, match="probe slot"):
        await b.call(INSTANCE, Gate())

    await eventually(lambda: b.allow(INSTANCE), timeout=2.0)
    assert time.time() - ghost.claimed_at >= 0.4

    async def plugin() -> str:
        return "ok"

    assert await b.call(INSTANCE, plugin) == "ok"
    assert b.state(INSTANCE) is BreakerState.CLOSED


async def test_results_of_calls_admitted_before_the_breaker_opened_change_nothing(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=1, reset_ms=5_000), "replica-a")
    b = await make_breakers(settings(threshold=1, reset_ms=5_000), "replica-b")
    slow = Gate()
    slow.error = RuntimeError("slow failure")
    started = asyncio.create_task(a.call(INSTANCE, slow))
    await eventually(lambda: slow.running == 1)
    await b.record_failure(INSTANCE, "down")
    await eventually(lambda: a.state(INSTANCE) is BreakerState.OPEN)
    before = a.snapshot()[INSTANCE]

    slow.release.set()
    with pytest.raises(RuntimeError, match="slow failure"):
        await started
    await a.record_success(INSTANCE)  # no admission: ignored while open
    await a.record_failure(INSTANCE, "while open")
    await asyncio.sleep(0.1)
    assert a.snapshot()[INSTANCE] == before
    assert b.snapshot()[INSTANCE]["generation"] == 1


async def test_a_process_started_later_loads_the_current_state(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(threshold=2), "replica-a")
    await trip(a, 2)
    late = await make_breakers(settings(threshold=2), "replica-late")
    assert late.state(INSTANCE) is BreakerState.OPEN  # right after start, no waiting
    assert not late.allow(INSTANCE)
    assert late.snapshot()[INSTANCE] == a.snapshot()[INSTANCE]


async def test_stop_removes_the_count_keys_of_the_process(make_breakers: MakeBreakers, nats_client: Client) -> None:
    a = await make_breakers(settings(threshold=5), "replica-a")
    b = await make_breakers(settings(threshold=5), "replica-b")
    await trip(a, 2)
    await a.flush()
    await eventually(lambda: b.snapshot()[INSTANCE]["failures"] == 2)
    await a.stop()
    await eventually(lambda: b.snapshot()[INSTANCE]["failures"] == 0)
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    with pytest.raises(NoKeysError):
        await kv.keys()


async def test_an_unknown_instance_is_a_clear_error(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(), "replica-a")
    with pytest.raises(KeyError, match=r"no circuit breaker for plugin instance 'typo'.*known: auth, other"):
        a.allow("typo")


# --- clocks and warnings -------------------------------------------------------------------------------------


class _ForbiddenDatetime(datetime):
    """Stands in for ``datetime`` inside aiobreaker: its naive clocks are the defects that must not leak."""

    calls: list[str] = []  # noqa: RUF012  # shared on purpose: the class is the patch

    @classmethod
    def utcnow(cls) -> NoReturn:
        cls.calls.append("utcnow")
        raise AssertionError("aiobreaker's datetime.utcnow() was reached (deprecated; mixed with now())")

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> NoReturn:
        cls.calls.append("now")
        raise AssertionError("aiobreaker's naive datetime.now() was reached (wrong outside UTC)")


@pytest.fixture
def aiobreaker_clocks_forbidden(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _ForbiddenDatetime.calls = []
    monkeypatch.setattr(aiobreaker.circuitbreaker, "datetime", _ForbiddenDatetime)
    monkeypatch.setattr(aiobreaker.state, "datetime", _ForbiddenDatetime)
    return _ForbiddenDatetime.calls


@pytest.fixture
def tokyo() -> Iterator[None]:
    """The process runs in Asia/Tokyo (UTC+9) for the test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "Asia/Tokyo")
        time.tzset()
        yield
    time.tzset()


async def test_the_reset_timeout_is_honoured_in_tokyo(
    make_breakers: MakeBreakers, tokyo: None, aiobreaker_clocks_forbidden: list[str]
) -> None:
    assert time.localtime().tm_gmtoff == 9 * 3600
    naive_drift = datetime.now() - datetime.now(UTC).replace(tzinfo=None)  # what aiobreaker's mix would be off by
    assert abs(naive_drift - timedelta(hours=9)) < timedelta(seconds=1)

    reset = 0.5
    a = await make_breakers(settings(threshold=1, reset_ms=int(reset * 1000)), "replica-a")
    b = await make_breakers(settings(threshold=1, reset_ms=int(reset * 1000)), "replica-b")
    changes = StateChanges()
    b.add_listener(changes)
    before = time.time()
    await a.record_failure(INSTANCE, "down")
    await changes.wait_for("OPEN")

    snapshot = b.snapshot()[INSTANCE]
    opened_at = datetime.fromisoformat(str(snapshot["opened_at"]))
    reset_at = datetime.fromisoformat(str(snapshot["reset_at"]))
    assert opened_at.utcoffset() == timedelta(0)
    assert abs(opened_at.timestamp() - before) < reset * 10  # aiobreaker's mix would be off by 9 h
    assert reset_at - opened_at == timedelta(milliseconds=500)
    with pytest.raises(BreakerOpen) as refused:
        await b.call(INSTANCE, Gate())
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 0.5
    while time.time() < reset_at.timestamp() - 0.05:
        assert b.state(INSTANCE) is BreakerState.OPEN and not b.allow(INSTANCE)
        await asyncio.sleep(0.05)

    half_open = await changes.wait_for("HALF_OPEN", timeout=reset * 6)  # noticed by a timer: no call needed
    assert time.time() >= reset_at.timestamp()
    assert half_open - changes.seen[0][0] < reset * 5  # about one reset timeout, not 9 h off
    assert b.allow(INSTANCE) and a.allow(INSTANCE)
    assert aiobreaker_clocks_forbidden == []


async def test_no_aiobreaker_clock_or_warning_is_reached_in_a_whole_cycle(
    make_breakers: MakeBreakers, aiobreaker_clocks_forbidden: list[str]
) -> None:
    reset = 0.15
    a = await make_breakers(settings(threshold=2, reset_ms=int(reset * 1000)), "replica-a")
    changes = StateChanges()
    a.add_listener(changes)

    async def plugin() -> str:
        return "ok"

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await a.call(INSTANCE, lambda: fail(RuntimeError("down")))
    with pytest.raises(BreakerOpen):
        await a.call(INSTANCE, plugin)
    await eventually(lambda: a.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=reset * 20)
    with pytest.raises(RuntimeError):
        await a.call(INSTANCE, lambda: fail(RuntimeError("still down")))
    await eventually(lambda: a.allow(INSTANCE), timeout=reset * 20)
    assert await a.call(INSTANCE, plugin) == "ok"
    a.snapshot()
    assert [name for _, _, name in changes.seen] == ["OPEN", "HALF_OPEN", "OPEN", "HALF_OPEN", "CLOSED"]
    assert aiobreaker_clocks_forbidden == []


# --- broker restart ------------------------------------------------------------------------------------------


async def test_the_watch_recovers_after_nats_server_restarts(nats_server: EmbeddedNats) -> None:
    owner = await broker.connect([nats_server.url], name="owner")
    await broker.declare(broker.jetstream(owner), storage="file")  # survives the restart
    clients = [await broker.connect([nats_server.url], name=name) for name in "ab"]
    a = FleetBreakers(broker.jetstream(clients[0]), settings(threshold=2), "replica-a")
    b = FleetBreakers(broker.jetstream(clients[1]), settings(threshold=2), "replica-b")
    try:
        await a.start()
        await b.start()
        await a.record_failure(INSTANCE, "before the restart")
        await a.flush()
        await eventually(lambda: b.snapshot()[INSTANCE]["failures"] == 1)

        nats_server.stop()
        nats_server.start()

        async def broker_is_back() -> bool:
            try:
                kv = await broker.jetstream(owner, timeout=0.5).key_value(BREAKERS_BUCKET)
                await kv.status()
            except Exception:
                return False
            return all(client.is_connected for client in clients)

        await eventually(broker_is_back, timeout=10.0)
        await b.record_failure(INSTANCE, "after the restart")  # counted with A's failure from before
        # Both watches resumed: the failure recorded by B reaches A (reconnect wait 0.25 s, generous bound).
        await eventually(lambda: b.state(INSTANCE) is BreakerState.OPEN, timeout=5.0)
        await eventually(lambda: a.state(INSTANCE) is BreakerState.OPEN, timeout=5.0)
    finally:
        for fleet in (a, b):
            await fleet.stop()
        for client in (*clients, owner):
            await client.close()
