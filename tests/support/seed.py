"""Counter rows and finalized weeks written straight into ClickHouse.

Tests and benchmarks of the readers (API, rendered bulletin) need a year of
realistic figures in seconds and without Kafka. The rows have the exact shape
the worker writes (absolute values per shard with a version, plus superseded
older versions that readers must ignore), and the pinned week lands exactly
on the given weekly and year-to-date totals, by default the 2024-W50 bulletin.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clickhouse_driver import Client

from consumers import breakdown, figures
from consumers.finalized import FinalizedWeek, content_hash, store, versions
from hallstats.clickhouse import execute
from hallstats.errors import DataError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import COUNTED_TYPES, EventType
from schemas.figures import TypeCounts
from schemas.workdays import workday
from terminals.apportion import apportion

#: Section 四(一) of the user's 2024-W50 bulletin (copy: tests/data/bulletin-2024-w50-*.txt).
BULLETIN_WEEK = IsoWeek(2024, 50)
BULLETIN_WEEKLY = TypeCounts(consult=1627, accept=578, issue=3897, transfer=5464)
BULLETIN_YTD = TypeCounts(consult=78946, accept=32381, issue=156964, transfer=346703)
BULLETIN_WEEK_FIRST, BULLETIN_WEEK_LAST = IsoWeek(2024, 1), IsoWeek(2024, 52)

_HALLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "hall-provincial",
        ("经济和信息化厅", "住房城乡建设厅", "卫生健康委", "民政厅", "广电局", "自然资源厅"),
    ),
    ("hall-departmental", ("住房城乡建设厅", "交通运输厅", "民政厅", "卫生健康委")),
    ("hall-investment", ("商务厅", "药监局", "自然资源厅")),
)


@dataclass(frozen=True)
class SeedSpec:
    """What to seed: the days of ``first..last`` weeks, pinned to exact totals in ``pin``."""

    first: IsoWeek = BULLETIN_WEEK_FIRST
    last: IsoWeek = BULLETIN_WEEK_LAST
    pin: IsoWeek = BULLETIN_WEEK
    weekly: TypeCounts = BULLETIN_WEEKLY
    year_to_date: TypeCounts = BULLETIN_YTD
    halls: tuple[tuple[str, tuple[str, ...]], ...] = field(default=_HALLS)
    shards: int = 2
    seed: int = 5

    def cells(self) -> list[tuple[str, str]]:
        return [(hall, dept) for hall, depts in self.halls for dept in depts]


def _day_weight(day: date, rnd: random.Random) -> float:
    return (1.0 if workday(day) else 0.06) * rnd.uniform(0.75, 1.25)


def daily_counts(spec: SeedSpec) -> dict[date, dict[tuple[str, str], TypeCounts]]:
    """Per local date and (hall, department): counts meeting the pinned totals exactly."""
    if not spec.first <= spec.pin <= spec.last:
        raise DataError(f"seed: expected pin {spec.pin} within {spec.first}..{spec.last}")
    rnd = random.Random(spec.seed)
    days = [
        spec.first.start + timedelta(days=i)
        for i in range((spec.last.end - spec.first.start).days + 1)
    ]
    weights = {d: _day_weight(d, rnd) for d in days}
    ytd_first, _ = spec.pin.ytd_range()
    before = [d for d in days if ytd_first <= d < spec.pin.start]
    inside = [d for d in days if spec.pin.start <= d <= spec.pin.end]
    free = [d for d in days if d < ytd_first or d > spec.pin.end]
    per_type: dict[EventType, dict[date, int]] = {}
    for event_type in COUNTED_TYPES:
        weekly, ytd = spec.weekly.get(event_type), spec.year_to_date.get(event_type)
        totals: dict[date, int] = {}
        for group, total in (
            (before, ytd - weekly),
            (inside, weekly),
            # Outside the pinned span: about the pinned week's daily rate.
            (free, round(weekly / 5 * sum(weights[d] for d in free))),
        ):
            if group:
                totals.update(
                    zip(group, apportion(total, [weights[d] for d in group]), strict=True)
                )
        per_type[event_type] = totals
    cells = spec.cells()
    cell_weights = [rnd.uniform(0.3, 1.7) for _ in cells]
    result: dict[date, dict[tuple[str, str], TypeCounts]] = {}
    for day in days:
        split = {t: apportion(per_type[t][day], cell_weights) for t in COUNTED_TYPES}
        result[day] = {
            cell: TypeCounts.from_mapping({t.value: split[t][i] for t in COUNTED_TYPES})
            for i, cell in enumerate(cells)
        }
    return result


_COLUMNS = (
    "shard, period_kind, period, period_start, hall_id, department, event_type, "
    "value, version, updated_at"
)


def counter_rows(spec: SeedSpec) -> list[tuple[object, ...]]:
    """Day, week and year counter rows per shard, plus a superseded version of each."""
    now = datetime.now(UTC).replace(microsecond=0)
    totals: dict[tuple[str, str, date, str, str, EventType], int] = defaultdict(int)
    for day, cells in daily_counts(spec).items():
        week = IsoWeek.of(day)
        for (hall, dept), counts in cells.items():
            for t in COUNTED_TYPES:
                n = counts.get(t)
                totals[("day", day.isoformat(), day, hall, dept, t)] += n
                totals[("week", str(week), week.start, hall, dept, t)] += n
                totals[("year", f"{day.year:04d}", date(day.year, 1, 1), hall, dept, t)] += n
    rows: list[tuple[object, ...]] = []
    for (kind, period, start, hall, dept, t), value in totals.items():
        for shard, part in enumerate(apportion(value, [1.0 + s for s in range(spec.shards)])):
            version = 1000 + part
            rows.append((shard, kind, period, start, hall, dept, t.value, part, version, now))
            # What the worker wrote earlier for the same counter: must lose to argMax.
            stale = (shard, kind, period, start, hall, dept, t.value, part + 7, version - 1, now)
            rows.append(stale)
    return rows


def seed_counters(client: Client, settings: Settings, spec: SeedSpec) -> int:
    """Insert the spec's counter rows; returns how many rows were written."""
    rows = counter_rows(spec)
    execute(
        client,
        f"INSERT INTO {settings.clickhouse_database}.counters ({_COLUMNS}) VALUES",
        rows,
        settings=settings,
    )
    return len(rows)


_EVENT_COLUMNS = (
    "event_id, event_type, occurred_at, local_date, hall_id, window_id, department, "
    "item_code, case_id, fingerprint, shard, source_position, ingested_at"
)


def archive_rows(spec: SeedSpec, zone: ZoneInfo) -> list[tuple[object, ...]]:
    """One archived event per counted act, agreeing with :func:`counter_rows`, so that
    reconciliation passes. One row per event: meant for small specs, not a year."""
    now = datetime.now(UTC).replace(microsecond=0)
    rows: list[tuple[object, ...]] = []
    for day, cells in sorted(daily_counts(spec).items()):
        noon = datetime.combine(day, time(12), tzinfo=zone).astimezone(UTC)
        for (hall, dept), counts in cells.items():
            for t in COUNTED_TYPES:
                for _ in range(counts.get(t)):
                    event_id = str(uuid.uuid4())
                    position = len(rows)
                    rows.append(
                        (
                            event_id,
                            t.value,
                            noon,
                            day,
                            hall,
                            "W01",
                            dept,
                            "",
                            "",
                            event_id[:32],
                            0,
                            position,
                            now,
                        )
                    )
    return rows


def seed_archive(client: Client, settings: Settings, spec: SeedSpec) -> int:
    rows = archive_rows(spec, settings.zone)
    execute(
        client,
        f"INSERT INTO {settings.clickhouse_database}.events ({_EVENT_COLUMNS}) VALUES",
        rows,
        settings=settings,
    )
    return len(rows)


def finalize_from_counters(
    client: Client, settings: Settings, week: IsoWeek, finalized_at: datetime
) -> FinalizedWeek:
    """What ``hallstats finalize`` stores (totals, then breakdown), minus the Kafka wait."""
    weekly = figures.weekly(client, settings, week)
    ytd = figures.year_to_date(client, settings, week)
    existing = versions(client, settings, week)
    snapshot = FinalizedWeek(
        week=week,
        version=(existing[-1].version + 1) if existing else 1,
        finalized_at=finalized_at.replace(microsecond=0),
        weekly=weekly,
        year_to_date=ytd,
        content_hash=content_hash(week, weekly, ytd),
    )
    store(client, settings, snapshot)
    breakdown.record(client, settings, snapshot)
    return snapshot


def store_snapshot(
    client: Client,
    settings: Settings,
    week: IsoWeek,
    weekly: TypeCounts,
    year_to_date: TypeCounts,
    *,
    version: int = 1,
    finalized_at: datetime | None = None,
) -> FinalizedWeek:
    """A finalized version with given figures and no counters behind it (e.g. last year)."""
    snapshot = FinalizedWeek(
        week=week,
        version=version,
        finalized_at=(finalized_at or week.closes_at(settings.zone) + timedelta(days=1)),
        weekly=weekly,
        year_to_date=year_to_date,
        content_hash=content_hash(week, weekly, year_to_date),
    )
    store(client, settings, snapshot)
    return snapshot


def weeks(first: IsoWeek, last: IsoWeek) -> list[IsoWeek]:
    out = [first]
    while out[-1] < last:
        out.append(out[-1].next())
    return out


def seed_year(client: Client, settings: Settings, spec: SeedSpec | None = None) -> list[IsoWeek]:
    """Counters for the spec's weeks and every one of them finalized (Monday after close)."""
    spec = spec or SeedSpec()
    seed_counters(client, settings, spec)
    done = weeks(spec.first, spec.last)
    for week in done:
        finalize_from_counters(
            client, settings, week, week.closes_at(settings.zone) + timedelta(hours=10)
        )
    return done
