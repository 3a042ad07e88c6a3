"""Everything section 四(一) shows, read once and held as one immutable value.

Every output format renders the same :class:`Section`, so the Markdown, DOCX,
JSON and chart of one week can never disagree with each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from consumers import breakdown, bulletin, finalized, series
from consumers.breakdown import Scope, Share
from consumers.finalized import FinalizedWeek
from consumers.render.workdays import WorkingDays, working_days
from consumers.series import Change, Changes, SeriesPoint
from hallstats.clickhouse import connect
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import CATALOG, Counter
from schemas.ddl import ensure_schema
from schemas.figures import TypeCounts

TITLE = "四、综窗改革攻坚行动"
SUBTITLE = "（一）省本级综窗办件情况"
TOTAL_ROW = "合计"
TABLE_CAPTION = "各部门办件情况"


@dataclass(frozen=True)
class Table:
    """The per-department table as text cells: header, body rows, total row."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """One finalized version of a week with its breakdown, changes and year series."""

    point: SeriesPoint
    workdays: WorkingDays
    departments: tuple[Share, ...] | None  # None: version finalized before breakdowns existed
    year_series: tuple[SeriesPoint, ...]

    @property
    def snapshot(self) -> FinalizedWeek:
        return self.point.snapshot

    @property
    def week(self) -> IsoWeek:
        return self.snapshot.week

    def header(self) -> str:
        """The bulletin's date line, e.g. ``（12月9日—12月13日）``."""
        return f"（{self.workdays.header()}）"

    def paragraph(self) -> str:
        return bulletin.paragraph(self.snapshot.weekly, self.snapshot.year_to_date)

    def missing_table_note(self) -> str:
        """Said in place of the table when the version predates stored breakdowns."""
        return f"（{self.week} 第{self.snapshot.version}版未保存分部门数据。）"

    def changes_text(self) -> tuple[str, ...]:
        """环比 always (or why it is missing); 同比 only when last year's week is finalized."""
        point = self.point
        lines = [
            _sentence("与上周相比", point.week_over_week)
            if point.week_over_week
            else f"上周（{self.week.previous()}）数据尚未定版，暂无环比。"
        ]
        if point.year_over_year:
            lines.append(_sentence("与去年同期相比", point.year_over_year))
        return tuple(lines)

    def table(self) -> Table | None:
        """Departments by weekly total (largest first), then the 合计 row."""
        if self.departments is None:
            return None
        header = (
            "部门",
            *(f"本周{c.label}（{c.unit}）" for c in CATALOG.values()),
            *(f"累计{c.label}（{c.unit}）" for c in CATALOG.values()),
        )
        ordered = sorted(self.departments, key=lambda s: (-s.weekly.total(), s.name))
        rows = tuple(_row(s.name, s.weekly, s.year_to_date) for s in ordered)
        total = _row(TOTAL_ROW, self.snapshot.weekly, self.snapshot.year_to_date)
        return Table(header, rows, total)

    def as_json(self) -> dict[str, Any]:
        """The existing ``bulletin --format json`` body plus the section's parts."""
        return {
            **bulletin.as_json(self.snapshot),
            "title": TITLE,
            "subtitle": SUBTITLE,
            "header_range": self.workdays.header(),
            "working_days": [d.isoformat() for d in self.workdays.days],
            "official_calendar": self.workdays.official,
            "departments": None
            if self.departments is None
            else [
                {
                    "name": s.name,
                    "weekly": s.weekly.as_dict(),
                    "year_to_date": s.year_to_date.as_dict(),
                }
                for s in self.departments
            ],
            "week_over_week": changes_json(self.point.week_over_week),
            "year_over_year": changes_json(self.point.year_over_year),
            "changes_text": list(self.changes_text()),
        }


def changes_json(changes: Changes | None) -> dict[str, Any] | None:
    if changes is None:
        return None
    return {
        "compared_with": str(changes.compared_with),
        **{t.value: asdict(changes.get(t)) for t in CATALOG},
    }


def _row(name: str, weekly: TypeCounts, ytd: TypeCounts) -> tuple[str, ...]:
    return (name, *(str(weekly.get(t)) for t in CATALOG), *(str(ytd.get(t)) for t in CATALOG))


def _describe(change: Change, counter: Counter) -> str:
    if change.diff == 0:
        return f"{counter.label}持平"
    up = change.diff > 0
    text = f"{counter.label}{'增加' if up else '减少'}{abs(change.diff)}{counter.unit}"
    if change.percent is not None:
        text += f"（{'增长' if up else '下降'}{abs(change.percent):.1f}%）"
    return text


def _sentence(opening: str, changes: Changes) -> str:
    parts = "、".join(_describe(changes.get(t), c) for t, c in CATALOG.items())
    return f"{opening}，{parts}。"


def load(settings: Settings, week: IsoWeek, version: int | None = None) -> Section:
    """Read one finalized version (latest by default); NotFinalizedError if none."""
    client = connect(settings, reader=True)
    try:
        ensure_schema(settings, client)
        snapshot = finalized.read(client, settings, week, version)
        split = breakdown.read(client, settings, week, snapshot.version, scope=Scope.DEPARTMENT)
        point = series.changes(client, settings, snapshot)
        # The year's series holds each week's latest version; the week rendered shows
        # the version asked for (--version N), in the chart as in the text.
        year = tuple(
            point if p.snapshot.week == week else p
            for p in series.year(client, settings, week.year)
        )
        return Section(
            point=point,
            workdays=working_days(week),
            departments=None if split is None else split.departments,
            year_series=year,
        )
    finally:
        client.disconnect()
