"""Period rules: local dates, ISO weeks and year-to-date ranges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hallstats.errors import DataError
from schemas.calendar import IsoWeek, Periods, local_date, weeks_in_year

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_bulletin_week() -> None:
    week = IsoWeek.parse("2024-W50")
    assert (week.start, week.end) == (date(2024, 12, 9), date(2024, 12, 15))
    assert week.ytd_range() == (date(2024, 1, 1), date(2024, 12, 15))


def test_week_year_differs_from_calendar_year() -> None:
    assert IsoWeek.of(date(2025, 12, 29)) == IsoWeek(2026, 1)
    assert IsoWeek.of(date(2024, 12, 30)) == IsoWeek(2025, 1)
    w01 = IsoWeek.parse("2025-W01")
    assert (w01.start, w01.end) == (date(2024, 12, 30), date(2025, 1, 5))
    # YTD of a week that starts in the previous calendar year starts on 1 January.
    assert w01.ytd_range() == (date(2025, 1, 1), date(2025, 1, 5))


def test_ytd_of_a_week_reaching_into_next_year_stops_on_31_december() -> None:
    week = IsoWeek.parse("2026-W53")  # 2026-12-28 .. 2027-01-03
    assert week.end == date(2027, 1, 3)
    assert week.ytd_range() == (date(2026, 1, 1), date(2026, 12, 31))


def test_utc_and_local_dates_differ_near_midnight() -> None:
    moment = datetime(2024, 12, 15, 23, 30, tzinfo=UTC)  # Monday 07:30 in Shanghai
    assert moment.date() == date(2024, 12, 15)
    assert local_date(moment, SHANGHAI) == date(2024, 12, 16)
    assert Periods.of(moment, SHANGHAI).week == IsoWeek(2024, 51)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(DataError, match="naive"):
        local_date(datetime(2024, 1, 1), SHANGHAI)  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize("text", ["2024-W00", "2024-W53", "2024W50", "24-W50", "2024-w50", ""])
def test_bad_week_names(text: str) -> None:
    with pytest.raises(DataError, match="week"):
        IsoWeek.parse(text)


def test_53_week_years() -> None:
    assert weeks_in_year(2020) == 53
    assert weeks_in_year(2026) == 53
    assert weeks_in_year(2024) == 52
    assert str(IsoWeek.parse("2020-W53")) == "2020-W53"


days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))


@given(days)
def test_every_day_lies_in_its_week(day: date) -> None:
    week = IsoWeek.of(day)
    assert week.start <= day <= week.end
    assert week.start.weekday() == 0
    assert (week.end - week.start).days == 6
    assert IsoWeek.parse(str(week)) == week


@given(days)
def test_weeks_tile_the_timeline(day: date) -> None:
    week = IsoWeek.of(day)
    assert week.next().start == week.end + timedelta(days=1)
    assert week.previous().next() == week


@given(days)
def test_ytd_range_rule(day: date) -> None:
    week = IsoWeek.of(day)
    first, last = week.ytd_range()
    assert first == date(week.year, 1, 1)
    assert last == min(week.end, date(week.year, 12, 31))
    assert first <= last
    # Every day of the week that lies in the week-year's calendar year is in YTD.
    for d in week.days():
        assert (first <= d <= last) == (d.year == week.year)


@given(
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)),  # noqa: DTZ001
    st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York", "Pacific/Kiritimati"]),
)
def test_local_date_matches_wall_clock(naive: datetime, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    moment = naive.replace(tzinfo=UTC)
    assert local_date(moment, zone) == moment.astimezone(zone).date()
    # The same instant written with another offset has the same local date.
    shifted = moment.astimezone(ZoneInfo("Asia/Kolkata"))
    assert local_date(shifted, zone) == local_date(moment, zone)
