"""Which stages forwarders may send to, and how an envelope moves past the ones they may not."""

from __future__ import annotations

import asyncio

from backworks.contracts.envelope import Envelope, Stage
from backworks.contracts.names import Phase
from backworks.contracts.types import FailureKind
from backworks.pipeline.gate import StageGate


class Liveness:
    def __init__(self, live: dict[str, int], ready: bool = True) -> None:
        self.live = live
        self.ready = asyncio.Event()
        if ready:
            self.ready.set()

    def count(self, instance: str) -> int:
        return self.live.get(instance, 0)

    def absent(self, instance: str) -> bool:
        return self.ready.is_set() and not self.count(instance)


class Breakers:
    def __init__(self, open_: set[str]) -> None:
        self.open = open_

    def allow(self, instance: str) -> bool:
        return instance not in self.open


def gate(live: dict[str, int], open_: frozenset[str] = frozenset(), ready: bool = True) -> StageGate:
    return StageGate(Liveness(live, ready), Breakers(set(open_)))  # type: ignore[arg-type]  # the two members used


A = Stage(instance="a", phase=Phase.REQUEST)
CRIT = Stage(instance="crit", phase=Phase.REQUEST, critical=True)
B = Stage(instance="b", phase=Phase.RESPONSE)


def envelope(*stages: Stage) -> Envelope:
    return Envelope(route="r", method="GET", path="/", itinerary=list(stages))


async def test_a_stage_is_unavailable_without_a_live_replica_or_with_an_open_breaker() -> None:
    assert gate({"a": 1}).unavailable(A) is None
    assert gate({}).unavailable(A) == "no live replica"
    assert gate({"a": 2}, frozenset({"a"})).unavailable(A) == "circuit breaker open"
    assert gate({}, ready=False).unavailable(A) is None, "before the view knows, nobody is presumed dead"
    assert StageGate().unavailable(A) is None


async def test_blocked_critical_names_the_first_critical_stage_that_cannot_work() -> None:
    assert gate({"crit": 1}).blocked_critical([A, CRIT, B]) is None
    assert gate({"a": 1, "b": 1}).blocked_critical([A, CRIT, B]) == (CRIT, "no live replica")
    assert gate({"crit": 1}, frozenset({"crit"})).blocked_critical([A, CRIT]) == (CRIT, "circuit breaker open")


async def test_advance_skips_optional_stages_and_stops_at_an_available_one() -> None:
    env = envelope(A, CRIT, B)
    nxt, recorded = gate({"crit": 1, "b": 1}).advance(env)
    assert nxt == CRIT and env.cursor == 1
    assert [(e.stage, e.kind, e.skipped) for e in recorded] == [("a.request", FailureKind.UNAVAILABLE, True)]
    assert env.errors == recorded
    assert env.annotations["skipped"] == [{"stage": "a.request", "reason": "unavailable"}]


async def test_advance_ends_the_itinerary_at_an_unavailable_critical_stage() -> None:
    env = envelope(A, CRIT, B)
    nxt, recorded = gate({"a": 1, "b": 1}).advance(env)
    assert nxt == A and recorded == [], "an available current stage is returned as is"
    env.cursor = 1
    nxt, recorded = gate({"a": 1, "b": 1}).advance(env)
    assert nxt is None and env.cursor == len(env.itinerary)
    ((stage, skipped),) = [(e.stage, e.skipped) for e in recorded]
    assert stage == "crit.request" and not skipped


async def test_advance_past_the_last_stage_finishes() -> None:
    env = envelope(A, B)
    nxt, recorded = gate({"a": 1}).advance(env)
    assert nxt == A
    env.cursor = 1
    nxt, recorded = gate({"a": 1}).advance(env)
    assert nxt is None and env.cursor == 2 and recorded[0].stage == "b.response" and recorded[0].skipped
