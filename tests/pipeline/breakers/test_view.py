"""The local view of a fleet breaker, in memory: how the fleet-wide streak is counted, states, probe slots."""

from __future__ import annotations

from backworks.contracts.breakers import BreakerState, ProbeRecord, key_token, parse_key
from tests.pipeline.breakers.records import count, opened, view


def test_the_streak_adds_up_every_writer() -> None:
    local = view()
    local.add_failure()
    local.apply_count("b", count("b", 2), revision=1)
    local.apply_count("c", count("c", 1), revision=2)
    assert local.failures() == 4


def test_a_success_anywhere_forgets_the_failures_it_had_seen_and_only_those() -> None:
    local = view()
    local.add_failure()
    local.apply_count("b", count("b", 3), revision=1)
    # C recorded a success when it had seen a:1 and b:2 (not yet B's third failure).
    local.apply_count("c", count("c", 0, resets={"a": 1, "b": 2}), revision=2)
    assert local.failures() == 1
    local.add_failure()
    assert local.failures() == 2


def test_our_own_success_resets_the_streak_for_everyone_we_know() -> None:
    local = view()
    local.apply_count("b", count("b", 3), revision=1)
    local.add_failure()
    assert local.add_success() is True
    assert local.failures() == 0
    assert local.own_record(1.0).resets == {"a": 1, "b": 3}
    assert local.add_success() is False  # nothing left to reset: nothing to write


def test_records_of_another_generation_do_not_count_and_a_transition_resets_our_own() -> None:
    local = view()
    local.add_failure()
    local.apply_count("b", count("b", 4, generation=0), revision=1)
    assert local.failures() == 5
    local.apply_state(opened(generation=1), revision=2)
    assert local.failures() == 0
    assert local.own_failures == 0 and local.own_generation == 1


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


def test_probe_slots_are_free_when_unclaimed_stale_or_past_their_lease() -> None:
    local = view()
    local.apply_state(opened(generation=4), revision=1)
    assert local.free_slots(now=200.0, lease=2.0) == [0, 1]
    local.apply_probe(0, ProbeRecord(generation=4, writer="b", claimed_at=199.0), revision=2)
    local.apply_probe(1, ProbeRecord(generation=3, writer="c", claimed_at=199.0), revision=3)
    assert local.free_slots(now=200.0, lease=2.0) == [1]
    assert local.free_slots(now=201.0, lease=2.0) == [0, 1]


def test_keys_are_parsed_and_replica_ids_made_key_safe() -> None:
    assert key_token("host.example.com-12-ab/c") == "host_example_com-12-ab_c"
    assert parse_key("auth.state") == ("auth", "state", "")
    assert parse_key("auth.count.host_1") == ("auth", "count", "host_1")
    assert parse_key("auth.probe.0") == ("auth", "probe", "0")
    assert parse_key("auth.something") is None
