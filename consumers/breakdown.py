"""Per-department and per-hall figures: live from the counters, frozen per version.

Finalization stores a week's totals in ``finalized_weeks``; :func:`record` adds
the same version's breakdown to ``finalized_breakdown`` so readers of a
published version get the split that belongs to exactly those totals, even
after late events have moved the live counters. The breakdown is checked to
add up to the snapshot's totals before it is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from clickhouse_driver import Client

from consumers.finalized import FinalizedWeek
from hallstats.clickhouse import execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import COUNTED_TYPES, EventType
from schemas.figures import TypeCounts
from schemas.queries import latest_counts


class Scope(StrEnum):
    """The dimension a breakdown is grouped by (values match the Enum8 column)."""

    DEPARTMENT = "department"
    HALL = "hall"


@dataclass(frozen=True)
class Share:
    """One department's or hall's figures in one week."""

    scope: Scope
    name: str
    weekly: TypeCounts
    year_to_date: TypeCounts


@dataclass(frozen=True)
class Breakdown:
    """A week's figures by department and by hall, each ordered by name."""

    departments: tuple[Share, ...]
    halls: tuple[Share, ...]

    def of(self, scope: Scope) -> tuple[Share, ...]:
        return self.departments if scope is Scope.DEPARTMENT else self.halls


def _sum(shares: Iterable[Share]) -> tuple[TypeCounts, TypeCounts]:
    weekly, ytd = TypeCounts(), TypeCounts()
    for share in shares:
        weekly, ytd = weekly + share.weekly, ytd + share.year_to_date
    return weekly, ytd


# Cells read with the counter read rule (schemas.queries.latest_counts), per hall
# and department.
_Cells = dict[tuple[str, str], dict[str, int]]


def _cells(client: Client, settings: Settings, where: str, params: dict[str, Any]) -> _Cells:
    cells: _Cells = defaultdict(dict)
    by = ("hall_id", "department", "event_type")
    for hall, department, event_type, value in latest_counts(
        client, settings, by=by, where=where, params=params
    ):
        if event_type != EventType.HEARTBEAT.value:
            cells[(str(hall), str(department))][str(event_type)] = int(value)
    return cells


def _group(weekly: _Cells, ytd: _Cells, scope: Scope) -> tuple[Share, ...]:
    index = 1 if scope is Scope.DEPARTMENT else 0
    sums: dict[str, list[dict[str, int]]] = defaultdict(lambda: [{}, {}])
    for slot, cells in enumerate((weekly, ytd)):
        for key, counts in cells.items():
            target = sums[key[index]][slot]
            for event_type, value in counts.items():
                target[event_type] = target.get(event_type, 0) + value
    return tuple(
        Share(scope, name, TypeCounts.from_mapping(w), TypeCounts.from_mapping(y))
        for name, (w, y) in sorted(sums.items())
    )


def live(client: Client, settings: Settings, week: IsoWeek) -> Breakdown:
    """The breakdown the counters show now (provisional until finalized)."""
    first, last = week.ytd_range()
    weekly = _cells(
        client, settings, "period_kind = 'week' AND period = %(period)s", {"period": str(week)}
    )
    ytd = _cells(
        client,
        settings,
        "period_kind = 'day' AND period_start >= %(first)s AND period_start <= %(last)s",
        {"first": first, "last": last},
    )
    return Breakdown(
        departments=_group(weekly, ytd, Scope.DEPARTMENT), halls=_group(weekly, ytd, Scope.HALL)
    )


def record(client: Client, settings: Settings, snapshot: FinalizedWeek) -> Breakdown:
    """Freeze the breakdown of a just-stored version; idempotent per (week, version).

    Raises OperationalError when the counters no longer add up to the snapshot's
    totals (events arrived between the two reads): re-running finalize then
    writes a new version whose totals and breakdown agree.
    """
    db = settings.clickhouse_database
    key = {"week": str(snapshot.week), "version": snapshot.version}
    ((existing,),) = execute(
        client,
        f"SELECT count() FROM {db}.finalized_breakdown "
        "WHERE week = %(week)s AND version = %(version)s",
        key,
        settings=settings,
    )
    if int(existing):
        found = read(client, settings, snapshot.week, snapshot.version)
        assert found is not None
        return found
    current = live(client, settings, snapshot.week)
    expected = (snapshot.weekly, snapshot.year_to_date)
    for scope in Scope:
        if _sum(current.of(scope)) != expected:
            weekly, ytd = _sum(current.of(scope))
            raise OperationalError(
                f"week {snapshot.week} v{snapshot.version}: expected the {scope.value} "
                f"breakdown to add up to weekly {snapshot.weekly.as_dict()} and year_to_date "
                f"{snapshot.year_to_date.as_dict()}, got {weekly.as_dict()} and "
                f"{ytd.as_dict()} (counters moved while finalizing); run finalize again"
            )
    rows = [
        (
            str(snapshot.week),
            snapshot.version,
            share.scope.value,
            share.name,
            event_type.value,
            share.weekly.get(event_type),
            share.year_to_date.get(event_type),
        )
        for scope in Scope
        for share in current.of(scope)
        for event_type in COUNTED_TYPES
    ]
    if rows:
        execute(
            client,
            f"INSERT INTO {db}.finalized_breakdown "
            "(week, version, scope, name, event_type, weekly, ytd) VALUES",
            rows,
            settings=settings,
        )
    return current


def read(
    client: Client,
    settings: Settings,
    week: IsoWeek,
    version: int,
    *,
    scope: Scope | None = None,
    name: str | None = None,
) -> Breakdown | None:
    """A finalized version's breakdown, optionally one scope or one name.

    None when that version has no stored breakdown at all (finalized before
    breakdowns existed); an empty Breakdown when the filter matched nothing.
    """
    db = settings.clickhouse_database
    params: dict[str, Any] = {"week": str(week), "version": version}
    rows = execute(
        client,
        f"SELECT scope, name, event_type, weekly, ytd FROM {db}.finalized_breakdown "
        "WHERE week = %(week)s AND version = %(version)s "
        + ("AND scope = %(scope)s " if scope is not None else "")
        + ("AND name = %(name)s " if name is not None else "")
        + "ORDER BY scope, name, event_type",
        {**params, "scope": scope.value if scope else "", "name": name or ""},
        settings=settings,
    )
    if not rows:
        if scope is None and name is None:
            return None
        ((stored,),) = execute(
            client,
            f"SELECT count() FROM {db}.finalized_breakdown "
            "WHERE week = %(week)s AND version = %(version)s",
            params,
            settings=settings,
        )
        if not int(stored):
            return None
    grouped: dict[tuple[str, str], tuple[dict[str, int], dict[str, int]]] = {}
    for row_scope, row_name, event_type, weekly, ytd in rows:
        w, y = grouped.setdefault((str(row_scope), str(row_name)), ({}, {}))
        w[str(event_type)] = int(weekly)
        y[str(event_type)] = int(ytd)
    shares = [
        Share(Scope(s), n, TypeCounts.from_mapping(w), TypeCounts.from_mapping(y))
        for (s, n), (w, y) in grouped.items()
    ]
    return Breakdown(
        departments=tuple(s for s in shares if s.scope is Scope.DEPARTMENT),
        halls=tuple(s for s in shares if s.scope is Scope.HALL),
    )
