"""Open, half-open and the probes that decide, fleet-wide, against a real nats-server; also in Asia/Tokyo and
across a nats-server restart."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from nats.aio.client import Client

from backworks.contracts.breakers import ProbeRecord, probe_key
from backworks.contracts.names import BREAKERS_BUCKET
from backworks.local.embedded import EmbeddedNats
from backworks.pipeline import broker
from backworks.pipeline.breakers import BreakerState, FleetBreakers
from backworks.pipeline.breakers import fleet as fleet_module
from backworks.pipeline.errors import BreakerOpen
from tests.pipeline.breakers.conftest import MakeBreakers
from tests.pipeline.breakers.records import INSTANCE, Gate, StateChanges, fail, ok, record, settings
from tests.waiting import eventually


def generation_is(fleet: FleetBreakers, generation: int) -> bool:
    return fleet.snapshot()[INSTANCE]["generation"] == generation


def state_is(fleet: FleetBreakers, state: BreakerState) -> bool:
    return fleet.state(INSTANCE) is state


def finished(tasks: list[asyncio.Task[Any]], count: int) -> bool:
    return sum(task.done() for task in tasks) == count


async def test_half_open_admits_the_permitted_probes_across_two_processes_and_their_rates_decide(
    make_breakers: MakeBreakers,
) -> None:
    config = settings(size=1, rate=50, wait_ms=200, probes=2)
    a = await make_breakers(config, "replica-a")
    b = await make_breakers(config, "gateway-b")
    await record(a, failures=1)
    # Both probes fail (100 %), one of two fails (50 % >= 50 %): reopened; both succeed (0 %): closed.
    rounds = [(RuntimeError("p1"), RuntimeError("p2")), (RuntimeError("p3"), None), (None, None)]
    for index, errors in enumerate(rounds):
        await eventually(lambda: a.state(INSTANCE) is b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)
        assert a.allow(INSTANCE) and b.allow(INSTANCE)
        gate = Gate(*errors)
        calls = [asyncio.create_task(fleet.call(INSTANCE, gate)) for _ in range(30) for fleet in (a, b)]
        await eventually(partial(finished, calls, 58))
        refused = [task.exception() for task in calls if task.done()]
        assert all(isinstance(error, BreakerOpen) and error.state == "half-open" for error in refused)
        assert gate.running == 2
        await eventually(lambda: not a.allow(INSTANCE) and not b.allow(INSTANCE))
        assert a.snapshot()[INSTANCE]["probes"] == b.snapshot()[INSTANCE]["probes"] == 2

        gate.release.set()
        results = await asyncio.gather(*[task for task in calls if not task.done()], return_exceptions=True)
        assert gate.most == 2
        assert sorted(map(str, results)) == sorted(str(error or "ok") for error in errors)
        # The two outcomes decide once: each round moves the generation by exactly one.
        for fleet in (a, b):
            await eventually(partial(generation_is, fleet, index + 2))
    for fleet in (a, b):
        assert fleet.state(INSTANCE) is BreakerState.CLOSED and fleet.allow(INSTANCE)
        assert "probes passed" in str(fleet.snapshot()[INSTANCE]["reason"])


async def test_slow_probes_reopen_the_breaker_everywhere(make_breakers: MakeBreakers) -> None:
    config = settings(size=1, rate=100, wait_ms=300, slow_ms=100, slow_rate=100)
    a = await make_breakers(config, "replica-a")
    b = await make_breakers(config, "replica-b")
    await record(a, failures=1)
    first_opened = a.snapshot()[INSTANCE]["opened_at"]
    await eventually(lambda: b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)

    async def slow_probe() -> str:
        await asyncio.sleep(0.15)
        return "slow"

    assert await b.call(INSTANCE, slow_probe) == "slow"
    for fleet in (a, b):
        await eventually(partial(state_is, fleet, BreakerState.OPEN))
        assert not fleet.allow(INSTANCE)
        snapshot = fleet.snapshot()[INSTANCE]
        assert snapshot["generation"] == 2
        assert str(snapshot["opened_at"]) > str(first_opened)
        assert "probes failed: slow-call rate 100% of 1 calls" in str(snapshot["reason"])
    # Open for a whole new wait, then half-open again.
    await eventually(lambda: a.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)


async def test_a_cancelled_probe_gives_its_slot_back(
    make_breakers: MakeBreakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = 10.0
    monkeypatch.setattr(fleet_module, "MIN_PROBE_LEASE", lease)
    a = await make_breakers(settings(size=1, wait_ms=200), "replica-a")
    b = await make_breakers(settings(size=1, wait_ms=200), "gateway-b")
    await record(a, failures=1)
    await eventually(lambda: b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)
    gate = Gate()
    probe = asyncio.create_task(a.call(INSTANCE, gate))
    await eventually(lambda: gate.running == 1 and not b.allow(INSTANCE))
    probe.cancel()
    started = time.monotonic()
    await eventually(lambda: b.allow(INSTANCE), timeout=lease / 4)  # well before the lease runs out
    assert time.monotonic() - started < lease / 4
    assert b.state(INSTANCE) is BreakerState.HALF_OPEN  # a cancelled call is no outcome


async def test_a_probe_lost_with_its_process_frees_its_slot_after_the_lease(
    make_breakers: MakeBreakers, nats_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_module, "MIN_PROBE_LEASE", 0.4)
    b = await make_breakers(settings(size=1, wait_ms=200), "replica-b")
    await record(b, failures=1)
    await eventually(lambda: b.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=2.0)
    # A process claimed the only slot, then died without an outcome.
    kv = await broker.jetstream(nats_client).key_value(BREAKERS_BUCKET)
    ghost = ProbeRecord(generation=1, writer="killed-replica", claimed_at=time.time())
    await kv.create(probe_key(INSTANCE, 0), ghost.model_dump_json().encode())
    await eventually(lambda: not b.allow(INSTANCE))
    with pytest.raises(BreakerOpen, match="probe"):
        await b.call(INSTANCE, Gate())

    await eventually(lambda: b.allow(INSTANCE), timeout=2.0)
    assert time.time() - ghost.claimed_at >= 0.4
    assert await b.call(INSTANCE, ok) == "ok"
    await eventually(partial(state_is, b, BreakerState.CLOSED))


# --- clocks ------------------------------------------------------------------------------------------------------


async def test_wait_in_open_is_honoured_in_tokyo(make_breakers: MakeBreakers) -> None:
    assert time.localtime().tm_gmtoff == 9 * 3600
    wait = 0.5
    a = await make_breakers(settings(size=1, wait_ms=int(wait * 1000)), "replica-a")
    b = await make_breakers(settings(size=1, wait_ms=int(wait * 1000)), "replica-b")
    changes = StateChanges()
    b.add_listener(changes)
    before = time.time()
    await record(a, failures=1)
    await changes.wait_for(BreakerState.OPEN)

    snapshot = b.snapshot()[INSTANCE]
    opened_at = datetime.fromisoformat(str(snapshot["opened_at"]))
    reset_at = datetime.fromisoformat(str(snapshot["reset_at"]))
    assert opened_at.utcoffset() == timedelta(0)
    assert abs(opened_at.timestamp() - before) < wait * 10  # a naive local clock would be off by 9 h
    assert reset_at - opened_at == timedelta(milliseconds=500)
    with pytest.raises(BreakerOpen) as refused:
        await b.call(INSTANCE, Gate())
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= wait
    while time.time() < reset_at.timestamp() - 0.05:
        assert b.state(INSTANCE) is BreakerState.OPEN and not b.allow(INSTANCE)
        await asyncio.sleep(0.05)

    half_open = await changes.wait_for(BreakerState.HALF_OPEN, timeout=wait * 6)  # noticed by a timer
    assert time.time() >= reset_at.timestamp()
    assert half_open - changes.seen[0][0] < wait * 5  # about one wait, not 9 h off
    assert b.allow(INSTANCE) and a.allow(INSTANCE)
    assert datetime.now(UTC) - opened_at < timedelta(minutes=1)


async def test_listeners_see_a_whole_cycle_in_order(make_breakers: MakeBreakers) -> None:
    wait = 0.15
    a = await make_breakers(settings(size=2, rate=100, wait_ms=int(wait * 1000)), "replica-a")
    changes = StateChanges()
    a.add_listener(changes)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await a.call(INSTANCE, partial(fail, RuntimeError("down")))
    with pytest.raises(BreakerOpen):
        await a.call(INSTANCE, ok)
    await eventually(lambda: a.state(INSTANCE) is BreakerState.HALF_OPEN, timeout=wait * 20)
    with pytest.raises(RuntimeError):
        await a.call(INSTANCE, partial(fail, RuntimeError("still down")))
    await eventually(lambda: a.allow(INSTANCE), timeout=wait * 20)
    assert await a.call(INSTANCE, ok) == "ok"
    await eventually(partial(state_is, a, BreakerState.CLOSED))
    assert [state.value for _, _, state in changes.seen] == ["open", "half-open", "open", "half-open", "closed"]


# --- broker restart ------------------------------------------------------------------------------------------


async def test_the_watch_recovers_after_nats_server_restarts(nats_server: EmbeddedNats) -> None:
    owner = await broker.connect([nats_server.url], name="owner")
    await broker.declare(broker.jetstream(owner), storage="file")  # survives the restart
    clients = [await broker.connect([nats_server.url], name=name) for name in "ab"]
    a = FleetBreakers(broker.jetstream(clients[0]), settings(size=2, rate=100), "replica-a")
    b = FleetBreakers(broker.jetstream(clients[1]), settings(size=2, rate=100), "replica-b")
    try:
        await a.start()
        await b.start()
        await record(a, failures=1)
        await a.flush()
        await eventually(lambda: b.snapshot()[INSTANCE]["calls"] == 1)

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
        await record(b, failures=1)  # counted with A's failure from before
        # Both watches resumed: the state written by B reaches A (reconnect wait 0.25 s, generous bound).
        await eventually(lambda: b.state(INSTANCE) is BreakerState.OPEN, timeout=5.0)
        await eventually(lambda: a.state(INSTANCE) is BreakerState.OPEN, timeout=5.0)
    finally:
        for fleet in (a, b):
            await fleet.stop()
        for client in (*clients, owner):
            await client.close()
