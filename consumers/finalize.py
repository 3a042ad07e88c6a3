"""``hallstats finalize``: freeze a closed week once Kafka has been fully processed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from consumers import figures
from consumers.clickhouse import connect, ensure_schema
from consumers.finalized import FinalizedWeek, content_hash, store, versions
from consumers.progress import Lag, wait_until_caught_up
from hallstats.errors import DataError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek


@dataclass(frozen=True)
class FinalizeResult:
    snapshot: FinalizedWeek
    created: bool  # False: figures unchanged, the existing latest version stands


def finalize(
    settings: Settings,
    week: IsoWeek,
    *,
    now: datetime | None = None,
    timeout: float | None = None,
    on_progress: Callable[[list[Lag]], None] | None = None,
) -> FinalizeResult:
    moment = now or datetime.now(UTC)
    closes = week.closes_at(settings.zone)
    if moment < closes:
        raise DataError(
            f"week {week}: expected a week that has ended (after {closes.isoformat()}), "
            f"it is still open at {moment.astimezone(settings.zone).isoformat()}"
        )
    wait_until_caught_up(
        settings,
        settings.finalize_timeout_seconds if timeout is None else timeout,
        on_progress=on_progress,
    )
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        weekly = figures.weekly(client, settings, week)
        ytd = figures.year_to_date(client, settings, week)
        digest = content_hash(week, weekly, ytd)
        existing = versions(client, settings, week)
        if existing and existing[-1].content_hash == digest:
            return FinalizeResult(existing[-1], created=False)
        note = ""
        if existing:
            before = existing[-1]
            note = (
                f"revises v{before.version}: weekly {(weekly - before.weekly).as_dict()}, "
                f"year_to_date {(ytd - before.year_to_date).as_dict()}"
            )
        snapshot = FinalizedWeek(
            week=week,
            version=(existing[-1].version + 1) if existing else 1,
            finalized_at=moment.replace(microsecond=0),
            weekly=weekly,
            year_to_date=ytd,
            content_hash=digest,
            note=note,
        )
        store(client, settings, snapshot)
        return FinalizeResult(snapshot, created=True)
    finally:
        client.disconnect()
