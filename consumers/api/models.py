"""The read API's response models: the JSON it answers and the schemas of its OpenAPI spec.

Per-type models (:data:`Counts`, :data:`Changes`) take their fields from the counter
catalog (``schemas/catalog.py``), one field per counted type named by its
``event_type``, in bulletin order: adding a type to the catalog adds it here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from consumers import bulletin, series
from consumers.breakdown import Share
from consumers.completeness import Completeness
from consumers.finalized import FinalizedWeek
from schemas.catalog import CATALOG, COUNTED_TYPES
from schemas.figures import TypeCounts
from schemas.queries import TERMINAL_HORIZON_TEXT


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_M = TypeVar("_M", bound=_Model)


def _per_type(name: str, base: type[_M], field: Callable[[], Any], doc: str | None) -> type[_M]:
    """``base`` with one more field per counted type (catalog order), each ``field()``."""
    return create_model(
        name,
        __base__=base,
        __module__=__name__,
        __doc__=doc,
        **{t.value: field() for t in COUNTED_TYPES},
    )


class _Counts(_Model):
    @classmethod
    def of(cls, counts: TypeCounts) -> Self:
        return cls(**{t.value: counts.get(t) for t in COUNTED_TYPES})


if TYPE_CHECKING:  # what mypy checks; at run time the fields come from the catalog
    Counts = _Counts
else:
    Counts = _per_type(
        "Counts",
        _Counts,
        lambda: (int, Field(ge=0)),
        "One figure per counted type: "
        + ", ".join(f"{c.label} {t.value} ({c.unit})" for t, c in CATALOG.items())
        + ".",
    )


class SilentTerminal(_Model):
    hall_id: str
    window_id: str
    last_seen: str = Field(
        description="Its last event or heartbeat (UTC, RFC 3339), written exactly as in "
        "the bulletin JSON",
        json_schema_extra={"format": "date-time"},
    )


class WeekFigures(_Model):
    week: str = Field(examples=["2024-W50"])
    version: int = Field(ge=1)
    finalized_at: datetime
    week_start: date
    week_end: date
    ytd_start: date
    ytd_end: date
    weekly: Counts
    year_to_date: Counts
    complete: bool | None = Field(
        description=f"false: a terminal seen in the {TERMINAL_HORIZON_TEXT} before the week's "
        "end has sent "
        "nothing since (listed in silent_terminals); null while the grace period runs. "
        "Live, as in the bulletin JSON: not part of the version."
    )
    silent_terminals: list[SilentTerminal] = Field(
        description="Terminals silent since the week's end, as in the bulletin JSON"
    )
    content_hash: str
    note: str = Field(description="What this version revised, empty for version 1")
    text: str = Field(description="The bulletin paragraph of section 四(一)")

    @classmethod
    def of(cls, snapshot: FinalizedWeek, done: Completeness) -> WeekFigures:
        ytd_first, ytd_last = snapshot.ytd_range
        return cls(
            week=str(snapshot.week),
            version=snapshot.version,
            finalized_at=snapshot.finalized_at,
            week_start=snapshot.week.start,
            week_end=snapshot.week.end,
            ytd_start=ytd_first,
            ytd_end=ytd_last,
            weekly=Counts.of(snapshot.weekly),
            year_to_date=Counts.of(snapshot.year_to_date),
            complete=done.complete,
            silent_terminals=[SilentTerminal(**t) for t in done.as_json()["silent_terminals"]],
            content_hash=snapshot.content_hash,
            note=snapshot.note,
            text=bulletin.paragraph(snapshot.weekly, snapshot.year_to_date),
        )


class Revision(_Model):
    version: int = Field(ge=1)
    finalized_at: datetime
    content_hash: str
    note: str
    weekly: Counts
    year_to_date: Counts

    @classmethod
    def of(cls, snapshot: FinalizedWeek) -> Revision:
        return cls(
            version=snapshot.version,
            finalized_at=snapshot.finalized_at,
            content_hash=snapshot.content_hash,
            note=snapshot.note,
            weekly=Counts.of(snapshot.weekly),
            year_to_date=Counts.of(snapshot.year_to_date),
        )


class Revisions(_Model):
    week: str
    revisions: list[Revision]


class Entry(_Model):
    name: str
    weekly: Counts
    year_to_date: Counts

    @classmethod
    def of(cls, share: Share) -> Entry:
        return cls(
            name=share.name,
            weekly=Counts.of(share.weekly),
            year_to_date=Counts.of(share.year_to_date),
        )


class BreakdownView(_Model):
    week: str
    version: int = Field(ge=1)
    scope: Literal["department", "hall"]
    entries: list[Entry] = Field(description="Ordered by name")


class Change(_Model):
    previous: int = Field(ge=0, description="The comparison week's weekly figure")
    diff: int = Field(description="This week minus the comparison week")
    percent: float | None = Field(description="diff / previous x 100, null when previous is 0")

    @classmethod
    def of(cls, change: series.Change) -> Change:
        return cls(previous=change.previous, diff=change.diff, percent=change.percent)


class _Changes(_Model):
    compared_with: str = Field(description="The comparison week (latest finalized version)")

    @classmethod
    def of(cls, changes: series.Changes | None) -> Self | None:
        if changes is None:
            return None
        return cls(
            compared_with=str(changes.compared_with),
            **{t.value: Change.of(changes.get(t)) for t in COUNTED_TYPES},
        )


if TYPE_CHECKING:
    Changes = _Changes
else:
    Changes = _per_type("Changes", _Changes, lambda: (Change, ...), None)


class SeriesEntry(_Model):
    week: str
    version: int = Field(ge=1)
    finalized_at: datetime
    weekly: Counts
    year_to_date: Counts
    week_over_week: Changes | None = Field(
        description="环比: against the previous ISO week; null when it is not finalized"
    )
    year_over_year: Changes | None = Field(
        description="同比: against the same ISO week a year earlier; null when not finalized"
    )

    @classmethod
    def of(cls, point: series.SeriesPoint) -> SeriesEntry:
        return cls(
            week=str(point.snapshot.week),
            version=point.snapshot.version,
            finalized_at=point.snapshot.finalized_at,
            weekly=Counts.of(point.snapshot.weekly),
            year_to_date=Counts.of(point.snapshot.year_to_date),
            week_over_week=Changes.of(point.week_over_week),
            year_over_year=Changes.of(point.year_over_year),
        )


class YearSeries(_Model):
    year: int
    weeks: list[SeriesEntry] = Field(description="Finalized weeks only, in order")


class LiveFigures(_Model):
    week: str
    provisional: Literal[True] = Field(
        description="Always true: live counters, not a finalized version; figures may change"
    )
    as_of: datetime
    week_start: date
    week_end: date
    ytd_start: date
    ytd_end: date
    weekly: Counts
    year_to_date: Counts


class Health(_Model):
    status: Literal["ok"]


class ApiError(_Model):
    error: str = Field(description="invalid_input | not_finalized | not_found | unauthorized | ...")
    field: str | None = Field(description="The offending input, when one is to blame")
    value: str | None = Field(description="What was received for that input")
    message: str
