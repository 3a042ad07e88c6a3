"""The gap guard finds every offset Faust did not deliver, whatever the order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hallstats.settings import Settings
from streams.gaps import GapGuard


def guard_at(start: dict[int, int]) -> GapGuard:
    guard = GapGuard(Settings(), "t")
    guard._expected.update(start)  # as if read from the group's committed offsets
    return guard


def test_gap_before_first_and_inside_a_batch() -> None:
    guard = guard_at({0: 100, 1: 5})
    assert guard.missing({0: [103, 104, 106], 1: [5, 6]}) == {0: [(100, 102), (105, 105)]}
    # The next batch continues where this one ended.
    assert guard.missing({0: [107], 1: [9]}) == {1: [(7, 8)]}


def test_redelivered_offsets_are_not_gaps() -> None:
    guard = guard_at({0: 10})
    assert guard.missing({0: [10, 11, 12]}) == {}
    assert guard.missing({0: [11, 12, 13]}) == {}


@given(st.sets(st.integers(0, 300), min_size=1), st.integers(1, 20))
def test_delivered_plus_gaps_cover_every_offset_once(delivered: set[int], chunk: int) -> None:
    guard = guard_at({0: 0})
    ordered = sorted(delivered)
    covered: list[int] = []
    for i in range(0, len(ordered), chunk):
        batch = ordered[i : i + chunk]
        for first, last in guard.missing({0: batch}).get(0, []):
            covered.extend(range(first, last + 1))
        covered.extend(batch)
    assert sorted(covered) == list(range(max(ordered) + 1))
