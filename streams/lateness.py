"""Which counted events are late: their week was already finalized.

The worker keeps the finalized weeks in memory, refreshed every few seconds
from ClickHouse, and records late events in ``late_events`` so that a later
revision of the week can be explained. An event counted while its week is
being finalized may miss the record; the revision itself still catches the
change, because ``finalize`` compares figures, not records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import faust

from hallstats.clickhouse import connect
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import is_counted
from schemas.queries import finalized_weeks
from streams.ledger import Record

log = logging.getLogger(__name__)


class FinalizedWeeks:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.versions: dict[IsoWeek, int] = {}

    def refresh(self) -> None:
        client = connect(self._settings)
        try:
            self.versions = finalized_weeks(client, self._settings)
        finally:
            client.disconnect()

    def late(self, records: Iterable[Record], zone: ZoneInfo) -> list[tuple[Record, str, int]]:
        if not self.versions:
            return []
        found = []
        for r in records:
            if not is_counted(r.event.event_type):
                continue
            week = IsoWeek.of(r.event.local_date(zone))
            version = self.versions.get(week)
            if version is not None:
                found.append((r, str(week), version))
        return found

    def install(self, app: faust.App, every: float = 5.0) -> None:
        @app.timer(every)  # type: ignore[untyped-decorator]
        async def refresh_finalized_weeks() -> None:
            try:
                await asyncio.to_thread(self.refresh)
            except OperationalError as exc:  # ClickHouse away: keep the last known set
                log.warning("cannot refresh finalized weeks: %s", exc)
