"""Reconciliation: recount a week from the event archive, independently of the
streaming counters, and name every counter on which the two disagree.

The archive (``events``, one row per accepted event_id) and the counters are
written by the same batch but computed separately; agreement is what lets a
week be frozen. Also checked: the week counter equals the sum of its days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from clickhouse_driver import Client

from consumers import figures
from hallstats.clickhouse import execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import COUNTED_TYPES
from schemas.figures import TypeCounts


@dataclass(frozen=True)
class Difference:
    counter: str  # e.g. "weekly.accept"
    streaming: int
    recount: int

    def __str__(self) -> str:
        return f"{self.counter}: streaming {self.streaming}, recount {self.recount}"


@dataclass(frozen=True)
class Reconciliation:
    week: IsoWeek
    weekly: TypeCounts  # streaming, week counters
    year_to_date: TypeCounts  # streaming, day counters
    differences: tuple[Difference, ...]

    @property
    def ok(self) -> bool:
        return not self.differences


def archive_counts(client: Client, settings: Settings, first: date, last: date) -> TypeCounts:
    rows = execute(
        client,
        f"SELECT event_type, uniqExact(event_id) FROM {settings.clickhouse_database}.events "
        "WHERE local_date >= %(first)s AND local_date <= %(last)s GROUP BY event_type",
        {"first": first, "last": last},
        settings=settings,
    )
    return TypeCounts.from_mapping({str(t): int(n) for t, n in rows})


def _compare(scope: str, streaming: TypeCounts, recount: TypeCounts) -> list[Difference]:
    return [
        Difference(f"{scope}.{t.value}", streaming.get(t), recount.get(t))
        for t in COUNTED_TYPES
        if streaming.get(t) != recount.get(t)
    ]


def reconcile(client: Client, settings: Settings, week: IsoWeek) -> Reconciliation:
    weekly = figures.weekly(client, settings, week)
    ytd = figures.year_to_date(client, settings, week)
    first, last = week.ytd_range()
    differences = [
        *_compare("weekly", weekly, archive_counts(client, settings, week.start, week.end)),
        *_compare("weekly_from_days", weekly, figures.days(client, settings, week.start, week.end)),
        *_compare("year_to_date", ytd, archive_counts(client, settings, first, last)),
    ]
    return Reconciliation(week, weekly, ytd, tuple(differences))
