"""Asynchronous commit bookkeeping: retried until confirmed, never rewound."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
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


steps = st.lists(
    st.tuples(st.integers(1, 50), st.booleans(), st.integers(0, 3), st.booleans()),
    min_size=1,
    max_size=40,
)


@settings(max_examples=600)
@given(steps)
def test_the_group_ends_at_the_last_offset_and_never_moves_back(
    batches: list[tuple[int, bool, int, bool]],
) -> None:
    """A model of the coordinator: it applies commits in the order they were sent,
    each one succeeding or failing, and answers in that order some time later; the
    idle loop sends retries in between. Whatever fails, the committed offset never
    moves backwards, and once retries succeed it is the last offset processed."""
    tracker = CommitTracker()
    in_flight: deque[tuple[dict[tuple[str, int], int], bool]] = deque()
    applied: list[int] = []  # the coordinator's committed offset, after each success

    def answer_one() -> None:
        sent, fine = in_flight.popleft()
        for tp, o in sent.items():
            if fine:
                applied.append(o)
                tracker.confirmed(tp, o)
            else:
                tracker.failed({tp: o})

    offset = 0
    for step, fine, answers, idle_retry in batches:
        offset += step
        in_flight.append((tracker.to_commit({P: offset}, {P}, forget_others=True), fine))
        for _ in range(min(answers, len(in_flight))):
            answer_one()
        if idle_retry and tracker.has_retries():
            in_flight.append((tracker.to_commit({}, {P}, forget_others=True), not fine))
    while in_flight:
        answer_one()
    for _ in range(3):  # the coordinator is healthy again: retries succeed
        sent = tracker.to_commit({}, {P}, forget_others=True)
        if sent:
            in_flight.append((sent, True))
            answer_one()
    assert applied == sorted(applied), "the committed offset moved backwards"
    assert applied and applied[-1] == offset
    assert not tracker.unconfirmed({P})


def test_an_older_failure_answered_while_a_newer_commit_is_in_flight_is_dropped() -> None:
    tracker = CommitTracker()
    tracker.to_commit({P: 100}, {P}, forget_others=True)
    tracker.to_commit({P: 200}, {P}, forget_others=True)
    tracker.failed({P: 100})  # 200 is still in flight: its answer decides
    assert not tracker.has_retries()
