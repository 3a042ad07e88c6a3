"""``hallstats finalize``: freeze a closed week once Kafka has been fully processed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from consumers import breakdown
from consumers.finalized import FinalizedWeek, content_hash, store, versions
from consumers.reconcile import reconcile
from hallstats.clickhouse import connect
from hallstats.errors import DataError, IntegrityError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import ensure_schema
from schemas.queries import sync_replicas
from streams.progress import Lag, wait_until_caught_up


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
        sync_replicas(client, settings, settings.finalize_timeout_seconds)
        check = reconcile(client, settings, week)
        if not check.ok:
            raise IntegrityError(
                f"week {week}: streaming counters and the event archive disagree, not "
                "finalizing: " + "; ".join(str(d) for d in check.differences)
            )
        weekly, ytd = check.weekly, check.year_to_date
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
        # Issue 5: freeze this version's per-department/per-hall split with it.
        breakdown.record(client, settings, snapshot)
        return FinalizeResult(snapshot, created=True)
    finally:
        client.disconnect()
