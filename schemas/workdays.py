"""Official working days: the one holiday rule, for the bulletin and the sample year.

China moves working days around public holidays (a Sunday can be a make-up
working day, a Monday a holiday), so Monday..Friday is wrong for some weeks.
The official calendar comes from the maintained ``chinesecalendar`` package,
which is updated once the State Council publishes each year's arrangement
(it covers 2004 to the latest published year). Kept out of :mod:`schemas.calendar`
so the worker, which needs no holidays, never loads it.
"""

from __future__ import annotations

from datetime import date

import chinese_calendar

__all__ = ["CALENDAR_VERSION", "official_workday", "workday"]

#: The installed ``chinesecalendar`` release, for messages about uncovered years.
CALENDAR_VERSION: str = str(getattr(chinese_calendar, "__version__", "?"))


def official_workday(day: date) -> bool | None:
    """The official answer (make-up weekend days work, public holidays do not), or None
    for a year the package has no data for (yet)."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def workday(day: date) -> bool:
    """The official answer, or Monday..Friday for a year the package does not cover."""
    official = official_workday(day)
    return day.weekday() < 5 if official is None else official
