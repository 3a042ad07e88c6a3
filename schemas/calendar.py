"""Calendar math in the hall's local time zone.

Day = local calendar date. Week = ISO 8601 week (Monday..Sunday) named by its
ISO week-year, e.g. ``2025-W01`` runs 2024-12-30..2025-01-05. Year-to-date for
week W = local dates from 1 January of W's ISO week-year through the earlier of
W's Sunday and 31 December of that year. Faust's epoch-aligned windows cannot
express any of this, so periods are computed keys.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from hallstats.errors import DataError

_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")


def local_date(moment: datetime, zone: ZoneInfo) -> date:
    """The hall-local calendar date of an aware instant."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise DataError(f"local_date: expected a timezone-aware datetime, got naive {moment!r}")
    return moment.astimezone(zone).date()


def weeks_in_year(iso_year: int) -> int:
    """52 or 53: 28 December always lies in the last ISO week of its year."""
    return date(iso_year, 12, 28).isocalendar().week


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week, ordered chronologically."""

    year: int
    week: int

    def __post_init__(self) -> None:
        if not 1 <= self.year <= 9999:
            raise DataError(f"week: expected an ISO year 1..9999, got {self.year}")
        if not 1 <= self.week <= weeks_in_year(self.year):
            raise DataError(
                f"week {self.year:04d}-W{self.week:02d}: expected week "
                f"1..{weeks_in_year(self.year)} for ISO year {self.year}, got {self.week}"
            )

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """Parse ``YYYY-Www`` (e.g. ``2024-W50``); anything else is a :class:`DataError`."""
        match = _WEEK_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise DataError(f"week: expected the form YYYY-Www such as 2024-W50, got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, day: date) -> IsoWeek:
        return _week_of(day)

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"

    @property
    def start(self) -> date:
        """Monday."""
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def end(self) -> date:
        """Sunday."""
        return date.fromisocalendar(self.year, self.week, 7)

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(7)]

    def ytd_range(self) -> tuple[date, date]:
        """First and last local date (inclusive) of this week's year-to-date."""
        return date(self.year, 1, 1), min(self.end, date(self.year, 12, 31))

    def next(self) -> IsoWeek:
        return IsoWeek.of(self.end + timedelta(days=1))

    def previous(self) -> IsoWeek:
        return IsoWeek.of(self.start - timedelta(days=1))

    def closes_at(self, zone: ZoneInfo) -> datetime:
        """Sunday 24:00 local: the instant after which no event belongs to this week."""
        return datetime.combine(self.end + timedelta(days=1), datetime.min.time(), tzinfo=zone)


@functools.lru_cache(maxsize=8192)
def _week_of(day: date) -> IsoWeek:
    """Cached: asked for every counted event, and a batch spans few days."""
    iso = day.isocalendar()
    return IsoWeek(iso.year, iso.week)


@dataclass(frozen=True)
class Periods:
    """The day, ISO week and calendar year one event is counted in."""

    day: date
    week: IsoWeek
    year: int

    @classmethod
    def of(cls, moment: datetime, zone: ZoneInfo) -> Periods:
        return cls.of_day(local_date(moment, zone))

    @classmethod
    def of_day(cls, day: date) -> Periods:
        return cls(day=day, week=IsoWeek.of(day), year=day.year)
