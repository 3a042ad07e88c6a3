"""Gap detection finds every offset that was not delivered, whatever the order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.gaps import missing


def test_gap_before_first_and_inside_a_batch() -> None:
    assert missing({0: 100, 1: 5}, {0: [103, 104, 106], 1: [5, 6]}) == {0: [(100, 102), (105, 105)]}
    # The next batch continues where this one ended.
    assert missing({0: 107, 1: 7}, {0: [107], 1: [9]}) == {1: [(7, 8)]}


def test_redelivered_offsets_are_not_gaps() -> None:
    assert missing({0: 10}, {0: [10, 11, 12]}) == {}
    assert missing({0: 13}, {0: [11, 12, 13]}) == {}


@given(st.sets(st.integers(0, 300), min_size=1), st.integers(1, 20))
def test_delivered_plus_gaps_cover_every_offset_once(delivered: set[int], chunk: int) -> None:
    ordered = sorted(delivered)
    position = 0
    covered: list[int] = []
    for i in range(0, len(ordered), chunk):
        batch = ordered[i : i + chunk]
        for first, last in missing({0: position}, {0: batch}).get(0, []):
            covered.extend(range(first, last + 1))
        covered.extend(o for o in batch if o >= position)
        position = max(position, max(batch) + 1)
    assert sorted(covered) == list(range(max(ordered) + 1))
