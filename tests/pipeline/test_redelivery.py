"""What a replica remembers of its recent hand-offs: bounded, the oldest forgotten first."""

from __future__ import annotations

from backworks.pipeline.redelivery import HandedOff, Recent


def test_handed_off_keeps_the_last_size_keys() -> None:
    handed = HandedOff(size=3)
    for number in range(5):
        handed.add((f"e{number}", 1))
    assert [(f"e{n}", 1) in handed for n in range(5)] == [False, False, True, True, True]
    handed.add(("e2", 1))  # already there: nothing else forgotten
    assert all((f"e{n}", 1) in handed for n in (2, 3, 4))
    assert ("e4", 2) not in handed  # another cursor of the same envelope is another hand-off


def test_handed_off_stays_bounded_over_many_messages() -> None:
    handed = HandedOff(size=100)
    for number in range(50_000):
        handed.add((str(number), 0))
    assert len(handed._keys) == 100
    assert ("49999", 0) in handed and ("49899", 0) not in handed


def test_recent_forgets_the_oldest_value_and_pops_what_it_keeps() -> None:
    recent: Recent[str] = Recent(size=2)
    recent.add(("a", 0), "first")
    recent.add(("b", 0), "second")
    recent.add(("c", 0), "third")
    assert recent.pop(("a", 0)) is None
    assert recent.pop(("b", 0)) == "second"
    assert recent.pop(("b", 0)) is None
    assert recent.pop(("c", 0), "x") == "third"
