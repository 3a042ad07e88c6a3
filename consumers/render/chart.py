"""PNG chart of an ISO year's finalized weekly figures, one panel per type.

Only finalized versions are drawn; a week without one is a gap in the line and
the caption says how many weeks are shown, so no trend is drawn across weeks
that were never published.

Panels rather than one axis: 流转 runs about ten times 受理, which would flatten
the smaller series. Drawn with matplotlib's object API (no pyplot global
state), so rendering is safe inside a server thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from consumers.series import SeriesPoint
from hallstats.errors import DataError, OperationalError
from schemas.calendar import IsoWeek, weeks_in_year
from schemas.catalog import CATALOG, EventType
from schemas.figures import TypeCounts

# Simplified-Chinese faces first; any of them renders the labels.
_CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Serif CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Noto Sans CJK JP",
)


def cjk_family() -> str:
    """An installed font family with Chinese glyphs, or a clear OperationalError."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for family in _CJK_FAMILIES:
        if family in installed:
            return family
    raise OperationalError(
        f"chart: expected a CJK font ({', '.join(_CJK_FAMILIES[:2])}), found none; "
        "install the Debian package fonts-noto-cjk (deploy/install-system-deps.sh)"
    )


@dataclass(frozen=True)
class YearPlot:
    """What the chart draws: every ISO week of the year, None where no version is final.

    A missing week is a hole, never an interpolation: a line from week 4 to week
    50 would show a trend nobody measured.
    """

    iso_year: int
    weeks: tuple[int, ...]  # 1..52 (or 53)
    values: Mapping[EventType, tuple[int | None, ...]]

    @property
    def shown(self) -> int:
        """How many weeks have a finalized version (and so a point)."""
        first = next(iter(self.values.values()))
        return sum(v is not None for v in first)

    def caption(self) -> str:
        total = len(self.weeks)
        if self.shown == total:
            return f"全年{total}周均已定版，图中全部显示。"
        return f"图中显示已定版的{self.shown}周（全年{total}周）；未定版的周留空，不与相邻周连线。"


def plot_data(points: Sequence[SeriesPoint], iso_year: int) -> YearPlot:
    """The year's finalized weekly figures by week number, None for the other weeks."""
    by_week: dict[int, TypeCounts] = {}
    for point in points:
        week = point.snapshot.week
        if week.year != iso_year:
            raise DataError(f"chart of {iso_year}: expected weeks of that ISO year, got {week}")
        by_week[week.week] = point.snapshot.weekly
    weeks = tuple(range(1, weeks_in_year(iso_year) + 1))
    return YearPlot(
        iso_year,
        weeks,
        {t: tuple(by_week[w].get(t) if w in by_week else None for w in weeks) for t in CATALOG},
    )


def figure(
    points: Sequence[SeriesPoint], iso_year: int, highlight: IsoWeek | None = None
) -> Figure:
    """The chart as a matplotlib Figure: one line per panel, NaN (a break in the line)
    for weeks without a finalized version; ``highlight`` marks the bulletin's week."""
    plot = plot_data(points, iso_year)
    family = cjk_family()
    fig = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{iso_year}年各周办件情况（已定版）", fontfamily=family, fontsize=14)
    fig.supxlabel(plot.caption(), fontfamily=family, fontsize=9)
    axes = fig.subplots(2, 2, sharex=True)
    for ax, (event_type, counter) in zip(axes.flat, CATALOG.items(), strict=True):
        values = plot.values[event_type]
        drawn = [math.nan if v is None else float(v) for v in values]
        ax.plot(plot.weeks, drawn, marker="o", markersize=2.5, linewidth=1.2)
        ax.set_title(f"{counter.label}（{counter.unit}）", fontfamily=family, fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0.5, 53.5)
        ax.set_ylim(bottom=0)  # counts: a cut axis would exaggerate the swings
        if highlight is not None and highlight.year == iso_year:
            value = values[highlight.week - 1]
            if value is not None:
                ax.plot([highlight.week], [value], marker="o", color="crimson", markersize=6)
                ax.annotate(
                    str(value),
                    (highlight.week, value),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=8,
                    color="crimson",
                )
    for ax in axes[1]:
        ax.set_xlabel("周次（ISO）", fontfamily=family)
    return fig


def render(points: Sequence[SeriesPoint], iso_year: int, highlight: IsoWeek | None = None) -> bytes:
    """The year's weekly series as PNG bytes (see :func:`figure`)."""
    buffer = io.BytesIO()
    figure(points, iso_year, highlight).savefig(buffer, format="png")
    return buffer.getvalue()
