"""Asynchronous commit bookkeeping: retried until confirmed, never rewound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.commits import CommitTracker

P = ("raw", 0)


def test_a_failed_commit_is_asked_for_again() -> None:
    tracker = CommitTracker()
    assert tracker.to_commit({P: 100}, {P}, forget_others=True) == {P: 100}
    tracker.failed({P: 100})
    assert tracker.has_retries()
    assert tracker.to_commit({}, {P}, forget_others=True) == {P: 100}
    tracker.confirmed(P, 100)
    assert not tracker.has_retries() and not tracker.unconfirmed({P})


def test_a_late_failure_of_an_older_commit_never_rewinds() -> None:
    tracker = CommitTracker()
    tracker.to_commit({P: 100}, {P}, forget_others=True)
    tracker.to_commit({P: 200}, {P}, forget_others=True)
    tracker.confirmed(P, 200)
    tracker.failed({P: 100})  # answered after the newer one
    assert not tracker.has_retries()
    assert tracker.to_commit({}, {P}, forget_others=True) == {}


def test_failures_of_partitions_that_went_elsewhere_are_forgotten() -> None:
    other = ("raw", 1)
    tracker = CommitTracker()
    tracker.failed({P: 5, other: 7})
    assert tracker.to_commit({}, {P}, forget_others=True) == {P: 5}
    assert not tracker.has_retries()


def test_a_revoke_commits_only_the_revoked_and_keeps_the_rest() -> None:
    other = ("raw", 1)
    tracker = CommitTracker()
    tracker.failed({P: 5, other: 7})
    assert tracker.to_commit({}, {other}, forget_others=False) == {other: 7}
    assert tracker.to_commit({}, {P}, forget_others=True) == {P: 5}


answers = st.lists(st.tuples(st.integers(1, 50), st.booleans()), min_size=1, max_size=40)


@given(answers, st.randoms(use_true_random=False))
def test_whatever_the_answers_the_last_offset_ends_committed(
    batches: list[tuple[int, bool]], rnd: object
) -> None:
    """Any sequence of batches, answers in any order, each commit failing or not: once
    retries run with the coordinator answering yes, the highest offset is confirmed
    and nothing lower is ever asked for after a higher one was confirmed."""
    import random

    assert isinstance(rnd, random.Random)
    tracker = CommitTracker()
    offset, in_flight = 0, []
    for step, ok in batches:
        offset += step
        in_flight.append((tracker.to_commit({P: offset}, {P}, forget_others=True), ok))
        rnd.shuffle(in_flight)
        while in_flight and rnd.random() < 0.5:
            asked, fine = in_flight.pop()
            for tp, o in asked.items():
                tracker.confirmed(tp, o) if fine else tracker.failed({tp: o})
    for asked, fine in in_flight:
        for tp, o in asked.items():
            tracker.confirmed(tp, o) if fine else tracker.failed({tp: o})
    best = tracker.committed().get(P, -1)
    for _ in range(3):  # the coordinator is back: retries succeed
        for tp, o in tracker.to_commit({}, {P}, forget_others=True).items():
            assert o > best, "a retry below a confirmed offset would rewind the group"
            tracker.confirmed(tp, o)
    assert tracker.committed()[P] == offset
    assert not tracker.unconfirmed({P})
