"""Week lifecycle: open -> closing -> final, and when finalization may happen.

A week closes at Sunday 24:00 local time. It may be finalized automatically
once its grace period has passed *both* on the clock and in the event stream:
``stream time`` is the latest ``occurred_at`` the worker has processed. During
a replay of last year's events the clock is far ahead but the stream is not,
so weeks finalize one by one as the replay moves past them, never before their
events were processed. Finalization itself then also waits until everything
already in Kafka is processed (see :mod:`streams.progress`).

:func:`week_state` is the one rule for "is this week done"; every reader asks it
(through :func:`week_status` with the configured grace): the automatic finalizer
(:func:`due_weeks`), ``hallstats status`` (the week states it shows), and
completeness (:mod:`consumers.completeness`, for the bulletin JSON and the read
API), which judges a week once its grace has run out on the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from clickhouse_driver import Client

from hallstats.clickhouse import execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.queries import finalized_weeks


class WeekState(StrEnum):
    OPEN = "open"  # before Sunday 24:00 local
    CLOSING = "closing"  # ended, grace not yet passed on the clock or in the stream
    DUE = "due"  # grace passed on both: finalization may run
    FINAL = "final"  # at least one finalized version exists


@dataclass(frozen=True)
class WeekStatus:
    week: IsoWeek
    state: WeekState
    closes_at: datetime
    grace_ends_at: datetime
    #: On the clock alone, the grace period still runs (an open week's too): terminals
    #: may still deliver the week's events. What completeness waits for.
    grace_running: bool


def week_state(
    week: IsoWeek,
    *,
    now: datetime,
    stream_time: datetime | None,
    grace: timedelta,
    zone: ZoneInfo,
    finalized: bool,
) -> WeekStatus:
    closes = week.closes_at(zone)
    grace_end = closes + grace
    grace_running = now < grace_end
    if finalized:
        state = WeekState.FINAL
    elif now < closes:
        state = WeekState.OPEN
    elif not grace_running and stream_time is not None and stream_time >= grace_end:
        state = WeekState.DUE
    else:
        state = WeekState.CLOSING
    return WeekStatus(week, state, closes, grace_end, grace_running)


def week_status(
    week: IsoWeek,
    settings: Settings,
    *,
    now: datetime,
    stream_time: datetime | None = None,
    finalized: bool = False,
) -> WeekStatus:
    """:func:`week_state` with the configured grace and time zone."""
    return week_state(
        week,
        now=now,
        stream_time=stream_time,
        grace=timedelta(seconds=settings.finalize_grace_seconds),
        zone=settings.zone,
        finalized=finalized,
    )


def stream_time(client: Client, settings: Settings) -> datetime | None:
    """Latest occurred_at the worker has processed (any terminal, heartbeats included)."""
    rows = execute(
        client,
        f"SELECT max(last_seen), count() FROM {settings.clickhouse_database}.terminals",
        settings=settings,
    )
    latest, n = rows[0]
    if not n:
        return None
    assert isinstance(latest, datetime)
    return latest if latest.tzinfo else latest.replace(tzinfo=ZoneInfo("UTC"))


def weeks_with_data(client: Client, settings: Settings) -> list[IsoWeek]:
    rows = execute(
        client,
        f"SELECT DISTINCT period FROM {settings.clickhouse_database}.counters "
        "WHERE period_kind = 'week'",
        settings=settings,
    )
    return sorted(IsoWeek.parse(str(r[0])) for r in rows)


def due_weeks(client: Client, settings: Settings, now: datetime) -> list[IsoWeek]:
    """Weeks with data, not yet finalized, whose grace passed on clock and stream."""
    done = finalized_weeks(client, settings)
    latest = stream_time(client, settings)
    return [
        w
        for w in weeks_with_data(client, settings)
        if week_status(w, settings, now=now, stream_time=latest, finalized=w in done).state
        is WeekState.DUE
    ]
