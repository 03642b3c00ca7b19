"""The local view of a fleet breaker, in memory: how the fleet-wide window is merged, states, probe slots."""

from __future__ import annotations

import random

from backworks.contracts.blueprint import WindowType
from backworks.contracts.breakers import FAILED, SLOW, BreakerState, ProbeRecord, key_token, parse_key
from backworks.pipeline.breakers import Rates
from tests.pipeline.breakers.records import opened, rule, view, window


def test_a_count_window_is_the_fleets_newest_n_calls_whoever_made_them() -> None:
    local = view(size=4, minimum=4)
    local.own.add(10.0, FAILED)
    local.own.add(13.0, FAILED | SLOW)
    local.apply_window("b", window("b", (11.0, 1, 0, 0), (12.0, 1, 1, 0), (14.0, 1, 0, 0)), revision=1)
    # Newest four: 14 ok (b), 13 failed+slow (us), 12 failed (b), 11 ok (b); our failure at 10 fell out.
    assert local.rates(now=20.0) == Rates(calls=4, failed=2, slow=1)
    assert local.trip_reason(now=20.0) == "failure rate 50% of 4 calls (threshold 50%)"
    for at in (15.0, 16.0, 17.0):
        local.own.add(at, 0)
    assert local.rates(now=20.0) == Rates(calls=4, failed=0, slow=0)


def test_our_own_count_window_keeps_only_our_last_n_calls() -> None:
    local = view(size=3, minimum=1)
    for at in range(5):
        local.own.add(float(at), FAILED if at < 2 else 0)
    assert [tally[0] for tally in local.own_record(now=9.0).tallies] == [2.0, 3.0, 4.0]


def test_a_time_window_sums_per_second_tallies_of_the_last_n_seconds() -> None:
    local = view(size=10, minimum=3, window=WindowType.TIME)
    local.own.add(100.2, FAILED)
    local.own.add(100.7, 0)
    local.own.add(105.1, SLOW)
    assert local.own_record(now=105.5).tallies == [(100.0, 2, 1, 0), (105.0, 1, 0, 1)]
    local.apply_window("b", window("b", (95.0, 5, 5, 0), (104.0, 2, 2, 0)), revision=1)
    assert local.rates(now=105.5) == Rates(calls=5, failed=3, slow=1)  # b's second 95 is out of the last 10 s
    assert local.rates(now=110.5) == Rates(calls=3, failed=2, slow=1)  # and now our second 100 as well
    assert local.rates(now=116.0) == Rates()


def test_rates_are_judged_only_from_minimum_calls_on() -> None:
    local = view(size=10, minimum=3, rate=50)
    local.own.add(1.0, FAILED)
    local.own.add(2.0, FAILED)
    assert local.trip_reason(now=3.0) is None
    local.own.add(3.0, 0)
    assert local.trip_reason(now=3.0) == "failure rate 67% of 3 calls (threshold 50%)"
    slow = view(size=4, minimum=2, slow_ms=100, slow_rate=50)
    slow.own.add(1.0, SLOW)
    slow.own.add(2.0, 0)
    assert slow.trip_reason(now=3.0) == "slow-call rate 50% of 2 calls (>= 100 ms; threshold 50%)"


def test_records_of_another_generation_do_not_count_and_a_transition_empties_our_window() -> None:
    local = view(size=5, minimum=1)
    local.own.add(1.0, FAILED)
    local.apply_window("b", window("b", (2.0, 1, 1, 0), generation=1), revision=1)
    assert local.rates(now=3.0) == Rates(calls=1, failed=1)
    local.apply_state(opened(generation=1), revision=2)
    assert local.rates(now=3.0) == Rates(calls=1, failed=1), "only b's record of generation 1"
    assert local.own.tallies(now=3.0) == [] and local.own_generation == 1


def test_an_older_revision_never_replaces_a_newer_one() -> None:
    local = view()
    assert local.apply_state(opened(generation=3), revision=10)
    assert not local.apply_state(opened(generation=2), revision=9)
    assert local.generation == 3


def test_half_open_is_an_open_state_whose_reset_time_has_come() -> None:
    local = view()
    assert local.effective(0.0) is BreakerState.CLOSED
    local.apply_state(opened(at=100.0), revision=1)
    assert local.effective(101.999) is BreakerState.OPEN
    assert local.effective(102.0) is BreakerState.HALF_OPEN


def test_probe_slots_are_free_when_unclaimed_stale_or_unfinished_past_their_lease() -> None:
    local = view(probes=3)
    local.apply_state(opened(generation=4), revision=1)
    assert local.free_slots(now=200.0, lease=2.0) == [0, 1, 2]
    local.apply_probe(0, ProbeRecord(generation=4, writer="b", claimed_at=199.0), revision=2)
    local.apply_probe(1, ProbeRecord(generation=3, writer="c", claimed_at=199.0), revision=3)
    local.apply_probe(2, ProbeRecord(generation=4, writer="c", claimed_at=190.0, outcome=0), revision=4)
    assert local.free_slots(now=200.0, lease=2.0) == [1]
    assert local.free_slots(now=201.0, lease=2.0) == [0, 1], "a finished probe keeps its slot"


def test_probes_decide_only_once_every_permitted_probe_has_an_outcome() -> None:
    local = view(probes=2)
    local.apply_state(opened(generation=1), revision=1)
    local.apply_probe(0, ProbeRecord(generation=1, writer="a", claimed_at=1.0, outcome=FAILED), revision=2)
    local.apply_probe(1, ProbeRecord(generation=1, writer="b", claimed_at=1.0), revision=3)
    assert local.probe_rates() is None
    local.apply_probe(1, ProbeRecord(generation=1, writer="b", claimed_at=1.0, outcome=SLOW), revision=4)
    rates = local.probe_rates()
    assert rates == Rates(calls=2, failed=1, slow=1)
    assert rates.verdict(rule()) == "failure rate 50% of 2 calls (threshold 50%)"


def test_keys_are_parsed_and_replica_ids_made_key_safe() -> None:
    assert key_token("host.example.com-12-ab/c") == "host_example_com-12-ab_c"
    assert parse_key("auth.state") == ("auth", "state", "")
    assert parse_key("auth.window.host_1") == ("auth", "window", "host_1")
    assert parse_key("auth.probe.0") == ("auth", "probe", "0")
    assert parse_key("auth.count.host_1") is None, "the consecutive-failure records of old releases are ignored"
    assert parse_key("auth.something") is None


def test_the_no_bad_call_shortcut_judges_as_the_full_merge_does() -> None:
    """``trip_reason`` skips merging a window that holds no failed or slow call; it must never decide otherwise."""
    rng = random.Random(8)
    for window_type, size in ((WindowType.COUNT, 5), (WindowType.TIME, 3)):
        local = view(size=size, minimum=2, window=window_type, slow_ms=100, slow_rate=50)
        now = 100.0
        for step in range(2000):
            now += rng.choice((0.1, 0.4, 1.3))
            local.own.add(now, rng.choices((0, FAILED, SLOW), weights=(90, 5, 5))[0])
            if step % 97 == 0:  # another replica's share, sometimes with a failure in it
                failed = rng.random() < 0.5
                local.apply_window("b", window("b", (now, 1, int(failed), 0)), revision=step + 1)
            rates = local.rates(now)  # the full merge, never shortcut
            expected = rates.verdict(local.settings) if rates.calls >= local.settings.minimum_calls else None
            assert local.trip_reason(now) == expected, (window_type, step)
            held = local.own.tallies(now)
            assert local.own.bad == sum(1 for _, _, f, s in held if f or s)
