"""The bulletin's header range: first to last official working day of a week.

Which days are working days is :mod:`schemas.workdays` (the official calendar,
shared with the sample year); this module only shapes the week's header.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from schemas.calendar import IsoWeek
from schemas.workdays import CALENDAR_VERSION, official_workday, workday

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkingDays:
    """A week's working days and whether they come from the official calendar."""

    week: IsoWeek
    days: tuple[date, ...]
    official: bool  # False: the year is beyond the package's data; Monday..Friday assumed

    def header(self) -> str:
        """``12月9日—12月13日`` (one day alone when it is the only working day); the
        whole calendar week when it has no working day at all (a holiday week)."""
        first, last = (
            (self.days[0], self.days[-1]) if self.days else (self.week.start, self.week.end)
        )
        return _md(first) if first == last else f"{_md(first)}—{_md(last)}"


def _md(day: date) -> str:
    return f"{day.month}月{day.day}日"


def working_days(week: IsoWeek) -> WorkingDays:
    """Official working days of ``week`` (make-up weekend days included, holidays not).

    Days of a year the package does not cover count Monday..Friday, and the result
    says so (``official=False``) instead of failing: a bulletin must still go out.
    """
    answers = {day: official_workday(day) for day in week.days()}
    unknown = [d for d, a in answers.items() if a is None]
    if unknown:
        log.warning(
            "week %s: no official working-day calendar for %s (chinesecalendar %s); "
            "assuming Monday-Friday",
            week,
            ", ".join(sorted({str(d.year) for d in unknown})),
            CALENDAR_VERSION,
        )
    days = tuple(d for d in answers if workday(d))
    return WorkingDays(week, days, official=not unknown)
