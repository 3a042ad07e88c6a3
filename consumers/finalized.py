"""Finalized weeks: immutable, versioned snapshots of a week's figures.

A version is written once and never updated. Re-finalizing a week writes a
new version only when the figures changed, so a published bulletin can
always be traced to the exact snapshot it quoted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from clickhouse_driver import Client

from hallstats.clickhouse import execute
from hallstats.errors import NotFinalizedError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import COUNTED_TYPES
from schemas.figures import TypeCounts

_FIGURE_COLUMNS = [f"{scope}_{t.value}" for scope in ("weekly", "ytd") for t in COUNTED_TYPES]
_COLUMNS = [
    "week",
    "version",
    "week_start",
    "week_end",
    "ytd_start",
    "ytd_end",
    "finalized_at",
    *_FIGURE_COLUMNS,
    "content_hash",
    "note",
]


@dataclass(frozen=True)
class FinalizedWeek:
    week: IsoWeek
    version: int
    finalized_at: datetime
    weekly: TypeCounts
    year_to_date: TypeCounts
    content_hash: str
    note: str = ""

    @property
    def ytd_range(self) -> tuple[date, date]:
        return self.week.ytd_range()


def content_hash(week: IsoWeek, weekly: TypeCounts, ytd: TypeCounts) -> str:
    body = json.dumps(
        {"week": str(week), "weekly": weekly.as_dict(), "year_to_date": ytd.as_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _from_row(row: tuple[object, ...]) -> FinalizedWeek:
    data = dict(zip(_COLUMNS, row, strict=True))
    n = len(COUNTED_TYPES)
    figures = [int(str(data[c])) for c in _FIGURE_COLUMNS]
    finalized_at = data["finalized_at"]
    assert isinstance(finalized_at, datetime)
    return FinalizedWeek(
        week=IsoWeek.parse(str(data["week"])),
        version=int(str(data["version"])),
        finalized_at=finalized_at if finalized_at.tzinfo else finalized_at.replace(tzinfo=UTC),
        weekly=TypeCounts(*figures[:n]),
        year_to_date=TypeCounts(*figures[n:]),
        content_hash=str(data["content_hash"]),
        note=str(data["note"]),
    )


def versions(client: Client, settings: Settings, week: IsoWeek) -> list[FinalizedWeek]:
    rows = execute(
        client,
        f"SELECT {', '.join(_COLUMNS)} FROM {settings.clickhouse_database}.finalized_weeks "
        "WHERE week = %(week)s ORDER BY version",
        {"week": str(week)},
        settings=settings,
    )
    return [_from_row(tuple(r)) for r in rows]


class UnknownVersionError(NotFinalizedError):
    """The week has finalized versions, but not the one asked for."""

    def __init__(self, week: IsoWeek, version: int, available: Sequence[int]) -> None:
        super().__init__(f"week {week}: expected version among {list(available)}, got {version}")
        self.week = week
        self.version = version
        self.available = tuple(available)


def pick(
    week: IsoWeek, found: Sequence[FinalizedWeek], version: int | None = None
) -> FinalizedWeek:
    """The latest (or a given) version among ``found``, a week's versions oldest first.

    NotFinalizedError if there is none; UnknownVersionError (a NotFinalizedError)
    if ``version`` is not among them.
    """
    if not found:
        raise NotFinalizedError(
            f"week {week}: expected a finalized version, found none; run "
            f"`hallstats finalize --week {week}` first"
        )
    if version is None:
        return found[-1]
    for item in found:
        if item.version == version:
            return item
    raise UnknownVersionError(week, version, [f.version for f in found])


def read(
    client: Client, settings: Settings, week: IsoWeek, version: int | None = None
) -> FinalizedWeek:
    """The latest (or a given) finalized version; NotFinalizedError if there is none."""
    return pick(week, versions(client, settings, week), version)


def store(client: Client, settings: Settings, snapshot: FinalizedWeek) -> None:
    first, last = snapshot.week.ytd_range()
    row = (
        str(snapshot.week),
        snapshot.version,
        snapshot.week.start,
        snapshot.week.end,
        first,
        last,
        snapshot.finalized_at.astimezone(UTC).replace(microsecond=0),
        *snapshot.weekly.as_dict().values(),
        *snapshot.year_to_date.as_dict().values(),
        snapshot.content_hash,
        snapshot.note,
    )
    execute(
        client,
        f"INSERT INTO {settings.clickhouse_database}.finalized_weeks "
        f"({', '.join(_COLUMNS)}) VALUES",
        [row],
        settings=settings,
    )
