"""PNG chart of an ISO year's finalized weekly figures, one panel per type.

Panels rather than one axis: 流转 runs about ten times 受理, which would flatten
the smaller series. Drawn with matplotlib's object API (no pyplot global
state), so rendering is safe inside a server thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from consumers.series import SeriesPoint
from hallstats.errors import OperationalError
from schemas.calendar import IsoWeek
from schemas.catalog import CATALOG

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


def render(points: Sequence[SeriesPoint], iso_year: int, highlight: IsoWeek | None = None) -> bytes:
    """The year's weekly series as PNG bytes; ``highlight`` marks the bulletin's week."""
    family = cjk_family()
    figure = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(f"{iso_year}年各周办件情况（已定版）", fontfamily=family, fontsize=14)
    axes = figure.subplots(2, 2, sharex=True)
    weeks = [p.snapshot.week.week for p in points]
    for ax, (event_type, counter) in zip(axes.flat, CATALOG.items(), strict=True):
        values = [p.snapshot.weekly.get(event_type) for p in points]
        ax.plot(weeks, values, marker="o", markersize=2.5, linewidth=1.2)
        ax.set_title(f"{counter.label}（{counter.unit}）", fontfamily=family, fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0.5, 53.5)
        ax.set_ylim(bottom=0)  # counts: a cut axis would exaggerate the swings
        if highlight is not None and highlight.year == iso_year and highlight.week in weeks:
            value = values[weeks.index(highlight.week)]
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
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
