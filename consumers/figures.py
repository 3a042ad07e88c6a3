"""Live figures read from the streaming counters in ClickHouse.

Each counter row is an absolute value with a version; the newest version of
each (shard, period, hall, department, type) wins, then shards are summed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from clickhouse_driver import Client

from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.figures import TypeCounts
from schemas.queries import latest_counts


def _counts(client: Client, settings: Settings, where: str, params: dict[str, Any]) -> TypeCounts:
    rows = latest_counts(client, settings, by=("event_type",), where=where, params=params)
    return TypeCounts.from_mapping({str(t): int(n) for t, n in rows if t != "heartbeat"})


def weekly(client: Client, settings: Settings, week: IsoWeek) -> TypeCounts:
    return _counts(
        client, settings, "period_kind = 'week' AND period = %(period)s", {"period": str(week)}
    )


def days(client: Client, settings: Settings, first: date, last: date) -> TypeCounts:
    """Sum of the daily counters over an inclusive range of local dates."""
    return _counts(
        client,
        settings,
        "period_kind = 'day' AND period_start >= %(first)s AND period_start <= %(last)s",
        {"first": first, "last": last},
    )


def year_to_date(client: Client, settings: Settings, week: IsoWeek) -> TypeCounts:
    first, last = week.ytd_range()
    return days(client, settings, first, last)
