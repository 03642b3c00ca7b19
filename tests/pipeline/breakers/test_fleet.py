"""Fleet-shared breakers judging rates over a fleet-wide sliding window, against a real nats-server: each
FleetBreakers has its own connection, as two processes of the fleet would."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest
from nats.aio.client import Client
from nats.js.errors import NoKeysError

from backworks.contracts.blueprint import WindowType
from backworks.contracts.breakers import StateRecord, state_key
from backworks.contracts.errors import BackworksError
from backworks.contracts.names import BREAKERS_BUCKET
from backworks.pipeline import broker
from backworks.pipeline.breakers import BreakerState, FleetBreakers
from backworks.pipeline.errors import BreakerOpen, PipelineError
from tests.pipeline.breakers.conftest import MakeBreakers
from tests.pipeline.breakers.records import INSTANCE, Gate, StateChanges, fail, ok, record, settings
from tests.waiting import eventually


def calls_are(fleet: FleetBreakers, calls: int) -> bool:
    return fleet.snapshot()[INSTANCE]["calls"] == calls


def state_is(fleet: FleetBreakers, state: BreakerState) -> bool:
    return fleet.state(INSTANCE) is state


def window_is(fleet: FleetBreakers, calls: int, failure_rate: float) -> bool:
    snapshot = fleet.snapshot()[INSTANCE]
    return snapshot["calls"] == calls and snapshot["failure_rate"] == failure_rate


async def test_the_failure_rate_opens_the_breaker_only_once_the_window_holds_minimum_calls(
    make_breakers: MakeBreakers,
) -> None:
    config = settings(size=10, minimum=6, rate=50)
    a = await make_breakers(config, "replica-a")
    b = await make_breakers(config, "gateway-b")
    changes = StateChanges()
    b.add_listener(changes)

    await record(a, failures=3)
    await record(b, successes=1)
    # 4 of 5 calls failed (80 %), across both processes: the two views agree, and it stays closed (5 < 6 calls).
    for fleet in (a, b):
        await eventually(partial(window_is, fleet, 4, 75.0))
    await record(a, failures=1)
    for fleet in (a, b):
        await eventually(partial(window_is, fleet, 5, 80.0))
        assert fleet.state(INSTANCE) is BreakerState.CLOSED and fleet.allow(INSTANCE)

    await record(b, successes=1)  # the sixth call: 4 of 6 failed, 67 % >= 50 %
    await changes.wait_for(BreakerState.OPEN)
    for fleet in (a, b):
        await eventually(partial(state_is, fleet, BreakerState.OPEN))
        assert not fleet.allow(INSTANCE) and fleet.allow("other")
    snapshot = b.snapshot()[INSTANCE]
    assert snapshot["generation"] == 1 and snapshot["calls"] == 0, "a transition starts an empty window"
    assert "failure rate 67% of 6 calls (threshold 50%)" in str(snapshot["reason"])

    with pytest.raises(BreakerOpen) as refused:
        await b.call(INSTANCE, Gate())
    assert refused.value.instance == INSTANCE and refused.value.state == "open"
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 10.0
    assert isinstance(refused.value, PipelineError) and isinstance(refused.value, BackworksError)


async def test_the_slow_call_rate_opens_the_breaker_although_every_call_succeeds(make_breakers: MakeBreakers) -> None:
    slow = 0.3
    config = settings(size=4, minimum=4, slow_ms=int(slow * 1000), slow_rate=50)
    a = await make_breakers(config, "replica-a")
    b = await make_breakers(config, "replica-b")

    async def slow_call() -> str:
        await asyncio.sleep(slow * 1.2)
        return "slow but ok"

    assert await a.call(INSTANCE, slow_call) == "slow but ok"
    assert await b.call(INSTANCE, ok) == "ok"
    assert await a.call(INSTANCE, ok) == "ok"
    for fleet in (a, b):
        await eventually(partial(calls_are, fleet, 3))
        assert fleet.snapshot()[INSTANCE]["slow_call_rate"] == 33.3
        assert fleet.state(INSTANCE) is BreakerState.CLOSED
    assert await b.call(INSTANCE, slow_call) == "slow but ok"  # 2 of 4 slow: 50 %; the call itself succeeds
    for fleet in (a, b):
        await eventually(partial(state_is, fleet, BreakerState.OPEN))
    reason = str(a.snapshot()[INSTANCE]["reason"])
    assert "slow-call rate 50% of 4 calls" in reason and "failure rate" not in reason


async def test_a_count_window_forgets_calls_older_than_its_last_n(make_breakers: MakeBreakers) -> None:
    config = settings(size=4, minimum=4, rate=80)
    a = await make_breakers(config, "replica-a")
    b = await make_breakers(config, "replica-b")
    await record(a, failures=3)
    await eventually(partial(window_is, b, 3, 100.0))
    await record(b, successes=4)  # the fleet's last 4 calls: all successes
    for fleet in (a, b):
        await eventually(partial(window_is, fleet, 4, 0.0))
    await record(a, failures=1)  # 1 of the last 4: 25 %; with the 3 old failures it would be 4 of 8
    for fleet in (a, b):
        await eventually(partial(window_is, fleet, 4, 25.0))
        assert fleet.state(INSTANCE) is BreakerState.CLOSED
    await record(b, failures=2)  # 3 of the last 4: 75 %
    await eventually(partial(window_is, a, 4, 75.0))
    assert a.state(INSTANCE) is BreakerState.CLOSED
    await record(b, failures=1)  # 4 of the last 4
    await eventually(partial(state_is, a, BreakerState.OPEN))


async def test_a_time_window_forgets_calls_older_than_its_n_seconds(make_breakers: MakeBreakers) -> None:
    seconds = 2
    config = settings(size=seconds, minimum=3, rate=50, window=WindowType.TIME)
    a = await make_breakers(config, "replica-a")
    b = await make_breakers(config, "replica-b")
    started = time.monotonic()
    await record(a, failures=2)
    await eventually(partial(window_is, b, 2, 100.0))
    # The failures age out of both views without any new write.
    for fleet in (a, b):
        await eventually(partial(window_is, fleet, 0, 0.0), timeout=seconds * 5)
    assert time.monotonic() - started >= (seconds - 1) * 0.9  # per-second tallies: gone 1 to 2 s later
    await record(b, failures=1, successes=2)  # 1 of 3: 33 %; with the 2 old failures it would be 3 of 5
    for fleet in (a, b):
        await eventually(partial(calls_are, fleet, 3))
        assert fleet.state(INSTANCE) is BreakerState.CLOSED


async def test_a_fast_successful_call_that_completes_the_minimum_opens_the_breaker(make_breakers: MakeBreakers) -> None:
    """Successes made through ``call`` while closed are counted without ``_settle``; the one that brings a failing
    window to ``minimum_calls`` must still open the breaker (and still return its result)."""
    a = await make_breakers(settings(size=10, minimum=4, rate=50), "replica-a")
    for index in range(2):
        with pytest.raises(RuntimeError):
            await a.call(INSTANCE, partial(fail, RuntimeError(f"failure {index}")))
    assert await a.call(INSTANCE, ok) == "ok"
    assert a.state(INSTANCE) is BreakerState.CLOSED and calls_are(a, 3)  # 2 of 3 failed, below the minimum of 4
    assert await a.call(INSTANCE, ok) == "ok"  # 2 of 4: 50 %
    await eventually(partial(state_is, a, BreakerState.OPEN))
    assert "failure rate 50% of 4 calls" in str(a.snapshot()[INSTANCE]["reason"])
    with pytest.raises(BreakerOpen):
        await a.call(INSTANCE, ok)


async def test_the_tripping_call_raises_the_original_error(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(size=2, rate=100), "replica-a")
    errors = [ValueError("first"), ConnectionError("second")]
    for error in errors:
        with pytest.raises(type(error)) as raised:
            await a.call(INSTANCE, partial(fail, error))
        assert raised.value is error
    assert a.state(INSTANCE) is BreakerState.OPEN
    assert "last error: ConnectionError: second" in str(a.snapshot()[INSTANCE]["reason"])
    gate = Gate()
    with pytest.raises(BreakerOpen):
        await a.call(INSTANCE, gate)
    assert gate.most == 0


async def test_concurrent_failures_on_two_processes_open_the_breaker_exactly_once(
    make_breakers: MakeBreakers, nats_client: Client
) -> None:
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    watcher = await kv.watch(state_key(INSTANCE))
    a = await make_breakers(settings(size=5, rate=100), "replica-a")
    b = await make_breakers(settings(size=5, rate=100), "replica-b")

    calls = [fleet.call(INSTANCE, partial(fail, RuntimeError("down"))) for fleet in (a, b) for _ in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    # And a second storm while it is open: refused, and it must not open "again".
    results = await asyncio.gather(
        *[fleet.call(INSTANCE, partial(fail, RuntimeError("down"))) for fleet in (a, b) for _ in range(20)],
        *[record(fleet, failures=1) for fleet in (a, b) for _ in range(20)],
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


async def test_outcomes_of_calls_admitted_before_the_breaker_opened_change_nothing(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(size=1, rate=100, wait_ms=5_000), "replica-a")
    b = await make_breakers(settings(size=1, rate=100, wait_ms=5_000), "replica-b")
    slow = Gate(RuntimeError("slow failure"))
    started = asyncio.create_task(a.call(INSTANCE, slow))
    await eventually(lambda: slow.running == 1)
    await record(b, failures=1)
    await eventually(lambda: a.state(INSTANCE) is BreakerState.OPEN)
    before = a.snapshot()[INSTANCE]

    slow.release.set()
    with pytest.raises(RuntimeError, match="slow failure"):
        await started
    await record(a, failures=1, successes=1)  # no admission: ignored while open
    await asyncio.sleep(0.1)
    assert a.snapshot()[INSTANCE] == before
    assert b.snapshot()[INSTANCE]["generation"] == 1


async def test_a_process_started_later_loads_the_current_state(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(size=2, rate=100), "replica-a")
    await record(a, failures=2)
    late = await make_breakers(settings(size=2, rate=100), "replica-late")
    assert late.state(INSTANCE) is BreakerState.OPEN  # right after start, no waiting
    assert not late.allow(INSTANCE)
    assert late.snapshot()[INSTANCE] == a.snapshot()[INSTANCE]


async def test_stop_removes_the_window_keys_of_the_process(make_breakers: MakeBreakers, nats_client: Client) -> None:
    a = await make_breakers(settings(size=5), "replica-a")
    b = await make_breakers(settings(size=5), "replica-b")
    await record(a, failures=2)
    await a.flush()
    await eventually(partial(window_is, b, 2, 100.0))
    await a.stop()
    await eventually(partial(window_is, b, 0, 0.0))
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    with pytest.raises(NoKeysError):
        await kv.keys()


async def test_an_unknown_instance_is_a_clear_error(make_breakers: MakeBreakers) -> None:
    a = await make_breakers(settings(), "replica-a")
    with pytest.raises(KeyError, match=r"no circuit breaker for plugin instance 'typo'.*known: auth, other"):
        a.allow("typo")
