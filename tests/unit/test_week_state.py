"""The week lifecycle rule (:func:`consumers.lifecycle.week_state`): pure, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from consumers.lifecycle import WeekState, week_state
from schemas.calendar import IsoWeek

SHANGHAI = ZoneInfo("Asia/Shanghai")
W50 = IsoWeek.parse("2024-W50")
W50_CLOSES = datetime(2024, 12, 16, tzinfo=SHANGHAI)  # Sunday 2024-12-15 24:00 local
DAY = timedelta(days=1)


def state_at(
    now: datetime, stream: datetime | None, *, grace: timedelta = DAY, final: bool = False
) -> WeekState:
    return week_state(
        W50, now=now, stream_time=stream, grace=grace, zone=SHANGHAI, finalized=final
    ).state


def test_week_state_open_until_sunday_midnight_local() -> None:
    status = week_state(
        W50,
        now=W50_CLOSES - timedelta(microseconds=1),
        stream_time=W50_CLOSES,
        grace=DAY,
        zone=SHANGHAI,
        finalized=False,
    )
    assert status.state is WeekState.OPEN
    assert status.closes_at == W50_CLOSES
    assert status.closes_at.astimezone(UTC) == datetime(2024, 12, 15, 16, tzinfo=UTC)
    assert status.grace_ends_at == W50_CLOSES + DAY
    assert state_at(W50_CLOSES, W50_CLOSES) is WeekState.CLOSING


def test_week_state_closing_during_grace() -> None:
    during = W50_CLOSES + DAY / 2
    assert state_at(during, during) is WeekState.CLOSING
    assert state_at(W50_CLOSES + DAY - timedelta(seconds=1), during) is WeekState.CLOSING


def test_week_state_historical_replay_stays_closing_until_the_stream_passes_grace() -> None:
    today = datetime(2026, 1, 1, tzinfo=UTC)  # clock far past the grace period
    assert state_at(today, None) is WeekState.CLOSING  # nothing processed yet
    assert state_at(today, datetime(2024, 12, 11, tzinfo=SHANGHAI)) is WeekState.CLOSING
    assert state_at(today, W50_CLOSES + DAY - timedelta(seconds=1)) is WeekState.CLOSING


def test_week_state_due_when_clock_and_stream_passed_grace() -> None:
    grace_end = W50_CLOSES + DAY
    assert state_at(grace_end, grace_end) is WeekState.DUE
    assert state_at(grace_end + DAY, grace_end + timedelta(hours=1)) is WeekState.DUE
    # The stream alone is not enough either (a terminal clock a bit ahead).
    assert state_at(grace_end - timedelta(seconds=1), grace_end) is WeekState.CLOSING


def test_week_state_final_when_finalized_whatever_the_times() -> None:
    for now, stream in [
        (W50_CLOSES - DAY, None),
        (W50_CLOSES + DAY / 2, W50_CLOSES),
        (W50_CLOSES + 3 * DAY, W50_CLOSES + 3 * DAY),
    ]:
        assert state_at(now, stream, final=True) is WeekState.FINAL


def test_grace_running_is_the_clock_alone() -> None:
    """What completeness waits for: the clock side of the rule, whatever stream or version."""

    def status(now: datetime, stream: datetime | None, final: bool = False) -> tuple[bool, str]:
        s = week_state(W50, now=now, stream_time=stream, grace=DAY, zone=SHANGHAI, finalized=final)
        return s.grace_running, s.state.value

    grace_end = W50_CLOSES + DAY
    assert status(W50_CLOSES - DAY, None) == (True, "open")
    assert status(grace_end - timedelta(seconds=1), grace_end) == (True, "closing")
    assert status(grace_end - timedelta(seconds=1), None, final=True) == (True, "final")
    # A replay: the clock is past the grace, the stream is not. Not due, yet judged.
    assert status(grace_end, W50_CLOSES) == (False, "closing")
    assert status(grace_end, grace_end) == (False, "due")


_RANK = {WeekState.OPEN: 0, WeekState.CLOSING: 1, WeekState.DUE: 2}
_seconds = st.integers(min_value=0, max_value=4 * 86400)


@given(
    start_now=st.integers(min_value=-3 * 86400, max_value=5 * 86400),
    start_stream=st.none() | st.integers(min_value=-30 * 86400, max_value=5 * 86400),
    grace=st.integers(min_value=0, max_value=3 * 86400),
    steps=st.lists(st.tuples(_seconds, st.none() | _seconds), min_size=1, max_size=12),
)
def test_week_state_never_goes_back_as_clock_and_stream_advance(
    start_now: int,
    start_stream: int | None,
    grace: int,
    steps: list[tuple[int, int | None]],
) -> None:
    now = W50_CLOSES + timedelta(seconds=start_now)
    stream = None if start_stream is None else W50_CLOSES + timedelta(seconds=start_stream)
    span = timedelta(seconds=grace)
    ranks = [_RANK[state_at(now, stream, grace=span)]]
    for now_step, stream_step in steps:
        now += timedelta(seconds=now_step)
        if stream_step is not None:  # None: the stream did not move in this step
            base = stream if stream is not None else W50_CLOSES - 30 * DAY
            stream = base + timedelta(seconds=stream_step)
        ranks.append(_RANK[state_at(now, stream, grace=span)])
    assert ranks == sorted(ranks), ranks
