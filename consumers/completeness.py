"""Is a week's input complete? Terminals that went quiet tell.

A terminal seen in the 4 weeks before a week's end that has sent nothing
(no event, no heartbeat) since that end may still hold events of the week:
the week is reported as possibly incomplete, naming those terminals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_driver import Client

from consumers.clickhouse import execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek

LOOKBACK = timedelta(weeks=4)


@dataclass(frozen=True)
class Terminal:
    hall_id: str
    window_id: str
    last_seen: datetime


def silent_since_week_end(client: Client, settings: Settings, week: IsoWeek) -> list[Terminal]:
    closes = week.closes_at(settings.zone).astimezone(UTC)
    rows = execute(
        client,
        "SELECT hall_id, window_id, max(last_seen) AS seen "
        f"FROM {settings.clickhouse_database}.terminals GROUP BY hall_id, window_id "
        "HAVING toUInt32(seen) >= %(since)s AND toUInt32(seen) < %(closes)s "
        "ORDER BY hall_id, window_id",
        {"since": int((closes - LOOKBACK).timestamp()), "closes": int(closes.timestamp())},
        settings=settings,
    )
    return [Terminal(str(h), str(w), s if s.tzinfo else s.replace(tzinfo=UTC)) for h, w, s in rows]
