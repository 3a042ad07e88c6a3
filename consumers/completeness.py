"""Is a week's input complete? Terminals that went quiet tell.

A terminal seen in the 4 weeks before a week's end that has sent nothing
(no event, no heartbeat) since that end may still hold events of the week:
the week is reported as possibly incomplete, naming those terminals.

:func:`judge` is the one rule; the bulletin JSON and the read API both report
its answer, so they cannot disagree about a week.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_driver import Client

from consumers.lifecycle import week_status
from hallstats.clickhouse import execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.queries import TERMINAL_HORIZON


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
        {"since": int((closes - TERMINAL_HORIZON).timestamp()), "closes": int(closes.timestamp())},
        settings=settings,
    )
    return [Terminal(str(h), str(w), s if s.tzinfo else s.replace(tzinfo=UTC)) for h, w, s in rows]


@dataclass(frozen=True)
class Completeness:
    """``complete``: None while the grace period runs on the clock (terminals may still
    deliver), else whether no terminal went silent. Live: not part of any version."""

    complete: bool | None
    silent: tuple[Terminal, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "silent_terminals": [
                {
                    "hall_id": t.hall_id,
                    "window_id": t.window_id,
                    "last_seen": t.last_seen.astimezone(UTC).isoformat(),
                }
                for t in self.silent
            ],
        }


def judge(client: Client, settings: Settings, week: IsoWeek, now: datetime) -> Completeness:
    """The week's completeness as of ``now`` (an aware instant)."""
    if now.tzinfo is None:
        raise ValueError(f"completeness: expected an aware 'now', got naive {now!r}")
    silent = tuple(silent_since_week_end(client, settings, week))
    # Judged once the grace has run out on the clock (the lifecycle's rule), whatever the
    # stream time or a finalized version say: only the clock tells terminals are late.
    grace_running = week_status(week, settings, now=now).grace_running
    return Completeness(None if grace_running else not silent, silent)
