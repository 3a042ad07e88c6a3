"""A year's finalized weeks as a series, with 环比 and 同比 changes per type.

Changes compare latest finalized versions only: a comparison week that is not
finalized gives no change (None) rather than one against provisional counts,
so a published trend never moves unless a finalized figure does.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_driver import Client

# The finalized_weeks column list and row decoding live with the table's owner.
from consumers.finalized import _COLUMNS, FinalizedWeek, _from_row
from hallstats.clickhouse import execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek, weeks_in_year
from schemas.catalog import COUNTED_TYPES, EventType
from schemas.figures import TypeCounts


@dataclass(frozen=True)
class Change:
    """How one type's weekly figure moved against a comparison week."""

    previous: int
    diff: int
    percent: float | None  # None when the comparison figure is 0 (no meaningful ratio)

    @classmethod
    def between(cls, current: int, previous: int) -> Change:
        diff = current - previous
        return cls(previous, diff, round(diff * 100 / previous, 2) if previous else None)


@dataclass(frozen=True)
class Changes:
    """Per-type changes of a week's weekly figures against ``compared_with``."""

    compared_with: IsoWeek
    per_type: tuple[Change, ...]  # one per counted type, in catalog order

    def __post_init__(self) -> None:
        if len(self.per_type) != len(COUNTED_TYPES):
            raise ValueError(
                f"changes: expected one per counted type {[t.value for t in COUNTED_TYPES]}, "
                f"got {len(self.per_type)}"
            )

    @classmethod
    def between(cls, current: TypeCounts, previous: TypeCounts, against: IsoWeek) -> Changes:
        return cls(
            against,
            tuple(Change.between(current.get(t), previous.get(t)) for t in COUNTED_TYPES),
        )

    def get(self, event_type: EventType) -> Change:
        return self.per_type[_POSITION[event_type]]


_POSITION = {t: i for i, t in enumerate(COUNTED_TYPES)}


@dataclass(frozen=True)
class SeriesPoint:
    """One finalized week (latest version) with its 环比 and 同比 changes."""

    snapshot: FinalizedWeek
    week_over_week: Changes | None
    year_over_year: Changes | None


def same_week_last_year(week: IsoWeek) -> IsoWeek | None:
    """同比 partner: the same ISO week number a year earlier (none for a W53 without one)."""
    if week.year <= 1 or week.week > weeks_in_year(week.year - 1):
        return None
    return IsoWeek(week.year - 1, week.week)


def latest_versions(
    client: Client, settings: Settings, first: IsoWeek, last: IsoWeek
) -> dict[IsoWeek, FinalizedWeek]:
    """Latest finalized version of every week in ``first..last`` (inclusive), one query.

    ``YYYY-Www`` names sort chronologically as strings, so a string range works.
    """
    rows = execute(
        client,
        f"SELECT {', '.join(_COLUMNS)} FROM {settings.clickhouse_database}.finalized_weeks "
        "WHERE week >= %(first)s AND week <= %(last)s ORDER BY week, version",
        {"first": str(first), "last": str(last)},
        settings=settings,
    )
    latest: dict[IsoWeek, FinalizedWeek] = {}
    for row in rows:
        snapshot = _from_row(tuple(row))
        latest[snapshot.week] = snapshot  # ordered by version: the last one wins
    return latest


def _point(snapshot: FinalizedWeek, known: dict[IsoWeek, FinalizedWeek]) -> SeriesPoint:
    before = known.get(snapshot.week.previous())
    partner = same_week_last_year(snapshot.week)
    last_year = known.get(partner) if partner else None
    return SeriesPoint(
        snapshot,
        Changes.between(snapshot.weekly, before.weekly, before.week) if before else None,
        Changes.between(snapshot.weekly, last_year.weekly, last_year.week) if last_year else None,
    )


def year(client: Client, settings: Settings, iso_year: int) -> list[SeriesPoint]:
    """Every finalized week of an ISO year, in order (weeks not finalized are absent)."""
    known = latest_versions(
        client, settings, IsoWeek(iso_year - 1, 1), IsoWeek(iso_year, weeks_in_year(iso_year))
    )
    return [_point(s, known) for w, s in sorted(known.items()) if w.year == iso_year]


def changes(client: Client, settings: Settings, snapshot: FinalizedWeek) -> SeriesPoint:
    """环比 and 同比 of one given snapshot (any version) against latest finalized weeks."""
    partner = same_week_last_year(snapshot.week)
    first = partner or snapshot.week.previous()
    known = latest_versions(client, settings, min(first, snapshot.week.previous()), snapshot.week)
    return _point(snapshot, known)
