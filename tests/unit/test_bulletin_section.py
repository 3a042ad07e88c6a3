"""Section 四(一) without a database: working-day header, change wording, text,
Markdown and DOCX layout, the PNG chart and its gaps, and the seed's exact apportioning."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import pytest
from docx import Document

from consumers.breakdown import Scope, Share
from consumers.finalized import FinalizedWeek
from consumers.render import docx, markdown, text
from consumers.render.chart import figure as chart_figure
from consumers.render.chart import plot_data
from consumers.render.chart import render as render_chart
from consumers.render.section import Section
from consumers.render.text import display_width
from consumers.render.workdays import working_days
from consumers.series import Change, Changes, SeriesPoint, same_week_last_year
from hallstats.errors import DataError
from schemas.calendar import IsoWeek
from schemas.catalog import EventType
from schemas.figures import TypeCounts
from tests.support import seed
from tests.support.render import plotted, texts

W50 = IsoWeek(2024, 50)
PARAGRAPH = (
    "本周，共计咨询1627人次、受理578件、颁发3897件、流转5464件次。"
    "今年以来，累计咨询78946人次、受理32381件、颁发156964件、流转346703件次。"
)


@pytest.mark.parametrize(
    ("week", "header", "official"),
    [
        (IsoWeek(2024, 50), "12月9日—12月13日", True),  # the reference bulletin
        (IsoWeek(2024, 39), "9月23日—9月29日", True),  # Sunday 29 Sep is a make-up day
        (IsoWeek(2024, 40), "9月30日", True),  # National Day holidays from 1 Oct
        (IsoWeek(2024, 41), "10月8日—10月12日", True),  # Saturday 12 Oct make-up day
        (IsoWeek(2025, 40), "9月29日—9月30日", True),
        (IsoWeek(2026, 1), "12月29日—1月4日", True),  # across New Year, Sunday make-up
        (IsoWeek(2020, 5), "1月27日—2月2日", True),  # no working day: the whole week
        (IsoWeek(2027, 10), "3月8日—3月12日", False),  # beyond the package's data
    ],
)
def test_header_follows_the_official_working_days(
    week: IsoWeek, header: str, official: bool
) -> None:
    days = working_days(week)
    assert days.header() == header
    assert days.official is official


def test_changes_and_their_wording() -> None:
    assert Change.between(110, 100) == Change(previous=100, diff=10, percent=10.0)
    assert Change.between(2, 3) == Change(previous=3, diff=-1, percent=-33.33)
    assert Change.between(5, 0).percent is None
    assert same_week_last_year(IsoWeek(2020, 53)) is None  # 2019 has no W53
    assert same_week_last_year(IsoWeek(2026, 53)) is None
    assert same_week_last_year(W50) == IsoWeek(2023, 50)
    section = _section(
        wow=Changes.between(
            TypeCounts(1627, 578, 3897, 5464), TypeCounts(1600, 578, 4000, 0), IsoWeek(2024, 49)
        )
    )
    assert section.changes_text() == (
        "与上周相比，咨询增加27人次（增长1.7%）、受理持平、颁发减少103件（下降2.6%）、"
        "流转增加5464件次。",
    )
    assert _section().changes_text() == ("上周（2024-W49）数据尚未定版，暂无环比。",)


def test_markdown_layout() -> None:
    text = markdown.render(_section())
    blocks = text.strip().split("\n\n")
    assert blocks[:4] == [
        "（12月9日—12月13日）",
        "## 四、综窗改革攻坚行动",
        "### （一）省本级综窗办件情况",
        PARAGRAPH,
    ]
    table = blocks[4].splitlines()
    assert table[0].startswith("| 部门 | 本周咨询（人次） | 本周受理（件） |")
    assert table[2] == "| 民政厅 | 1000 | 300 | 2000 | 3000 | 50000 | 20000 | 100000 | 200000 |"
    assert table[3].startswith("| 卫生\\|健康委 | 627 |")  # a '|' in a name is escaped
    assert table[-1] == (
        "| **合计** | **1627** | **578** | **3897** | **5464** | **78946** | **32381** "
        "| **156964** | **346703** |"
    )
    assert blocks[5] == "上周（2024-W49）数据尚未定版，暂无环比。"
    old = markdown.render(_section(departments=None))
    assert "第1版未保存分部门数据" in old


def test_display_width_counts_wide_and_fullwidth_twice() -> None:
    assert display_width("部门") == 4  # W
    assert display_width("（人次）") == 8  # F
    assert display_width("Ａ1") == 3  # fullwidth A, ASCII digit
    assert display_width("ｱ·—") == 3  # halfwidth katakana (H), ambiguous (A): one cell each
    assert display_width("e\u0301") == 1  # a combining accent takes no cell of its own
    assert display_width("") == 0


def test_text_section_parts_and_aligned_table() -> None:
    out = text.render(_section())
    assert out.endswith("\n") and not out.endswith("\n\n")
    blocks = out.rstrip("\n").split("\n\n")
    assert blocks[:4] == [
        "（12月9日—12月13日）",
        "四、综窗改革攻坚行动\n（一）省本级综窗办件情况",
        PARAGRAPH,
        "各部门办件情况\n"
        "部门         本周咨询  本周受理  本周颁发  本周流转\n"
        "             （人次）    （件）    （件）  （件次）\n"
        "-----------  --------  --------  --------  --------\n"
        "民政厅           1000       300      2000      3000\n"
        "卫生|健康委       627       278      1897      2464\n"
        "-----------  --------  --------  --------  --------\n"
        "合计             1627       578      3897      5464",
    ]
    assert blocks[4].splitlines()[-1] == "合计            78946     32381    156964    346703"
    assert blocks[5] == "上周（2024-W49）数据尚未定版，暂无环比。"
    for block in blocks[3:5]:
        lines = [line for line in block.splitlines() if line != "各部门办件情况"]
        # Figures are right-aligned: every line ends at the same terminal column.
        assert {display_width(line) for line in lines} == {51}
    assert "第1版未保存分部门数据" in text.render(_section(departments=None))


def test_text_table_fits_the_width_and_keeps_every_cell() -> None:
    section = _section()
    table = section.table()
    assert table is not None
    for width in (200, 80, 40, 10):
        lines = text.table_lines(table, width)
        blocks = "\n".join(lines).split("\n\n")
        if width >= 30:
            assert all(display_width(line) <= width for line in lines)
        # Reassemble the rows from the blocks: the same cells as the Markdown table.
        rows: dict[str, list[str]] = {}
        for block in blocks:
            for line in block.splitlines()[3:]:
                if not line.startswith("-"):
                    name, *cells = line.split()
                    rows.setdefault(name, []).extend(cells)
        assert rows == {row[0]: list(row[1:]) for row in (*table.rows, table.total)}
        expected_blocks = {200: 1, 80: 2, 40: 4, 10: 8}[width]
        assert len(blocks) == expected_blocks, width


def test_chart_leaves_gaps_where_no_version_is_final() -> None:
    weeks = (1, 2, 3, 4, 50)
    points = [_point(IsoWeek(2024, w), TypeCounts(w, 2 * w, 3 * w, 4 * w)) for w in weeks]
    plot = plot_data(points, 2024)
    assert plot.weeks == tuple(range(1, 53)) and plot.shown == 5
    consult = plot.values[EventType.CONSULT]
    assert [w for w, v in zip(plot.weeks, consult, strict=True) if v is not None] == list(weeks)
    assert consult[49] == 50 and plot.values[EventType.TRANSFER][3] == 16
    assert plot.caption() == "图中显示已定版的5周（全年52周）；未定版的周留空，不与相邻周连线。"

    fig = chart_figure(points, 2024, highlight=IsoWeek(2024, 50))
    drawn = plotted(fig)
    assert len(drawn) == 4  # one panel per counted type
    for xs, ys in drawn:
        assert xs == list(range(1, 53))
        assert _runs(ys) == [[1, 2, 3, 4], [50]]
    assert plot.caption() in texts(fig)

    full = plot_data([_point(IsoWeek(2020, w), TypeCounts(1, 1, 1, 1)) for w in range(1, 54)], 2020)
    assert full.shown == 53 and full.caption() == "全年53周均已定版，图中全部显示。"
    with pytest.raises(DataError, match="2023-W50"):
        plot_data([_point(IsoWeek(2023, 50), TypeCounts())], 2024)


def _runs(ys: list[float]) -> list[list[int]]:
    """Weeks drawn as one connected piece: matplotlib breaks a line at every NaN."""
    runs: list[list[int]] = []
    for week, y in enumerate(ys, start=1):
        if math.isnan(y):
            continue
        if runs and runs[-1][-1] == week - 1:
            runs[-1].append(week)
        else:
            runs.append([week])
    return runs


def _point(week: IsoWeek, weekly: TypeCounts) -> SeriesPoint:
    snapshot = FinalizedWeek(
        week=week,
        version=1,
        finalized_at=datetime(2024, 12, 16, 2, tzinfo=UTC),
        weekly=weekly,
        year_to_date=weekly,
        content_hash="x" * 64,
    )
    return SeriesPoint(snapshot, None, None)


def test_docx_holds_the_section_text() -> None:
    png = render_chart([_section().point], 2024, highlight=W50)
    document = Document(io.BytesIO(docx.render(_section(), png)))
    texts = [p.text for p in document.paragraphs if p.text]
    assert texts[:4] == [
        "（12月9日—12月13日）",
        "四、综窗改革攻坚行动",
        "（一）省本级综窗办件情况",
        PARAGRAPH,
    ]
    (table,) = document.tables
    assert [c.text for c in table.rows[-1].cells][:2] == ["合计", "1627"]
    assert len(document.inline_shapes) == 1  # the chart


def test_chart_is_a_png() -> None:
    png = render_chart([_section().point], 2024, highlight=W50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1100, 715)


def test_seed_hits_the_pinned_week_exactly() -> None:
    spec = seed.SeedSpec(first=IsoWeek(2024, 45), last=IsoWeek(2024, 52))
    cells = seed.daily_counts(spec)
    weekly, ytd = TypeCounts(), TypeCounts()
    for day, by_cell in cells.items():
        for counts in by_cell.values():
            if W50.start <= day <= W50.end:
                weekly = weekly + counts
            if day <= W50.end:
                ytd = ytd + counts
    assert weekly == seed.BULLETIN_WEEKLY
    assert ytd == seed.BULLETIN_YTD


def _section(*, wow: Changes | None = None, departments: tuple[Share, ...] | None = ()) -> Section:
    snapshot = FinalizedWeek(
        week=W50,
        version=1,
        finalized_at=datetime(2024, 12, 16, 2, tzinfo=UTC),
        weekly=seed.BULLETIN_WEEKLY,
        year_to_date=seed.BULLETIN_YTD,
        content_hash="x" * 64,
    )
    shares = (
        Share(
            Scope.DEPARTMENT,
            "民政厅",
            TypeCounts(1000, 300, 2000, 3000),
            TypeCounts(50000, 20000, 100000, 200000),
        ),
        Share(
            Scope.DEPARTMENT,
            "卫生|健康委",
            seed.BULLETIN_WEEKLY - TypeCounts(1000, 300, 2000, 3000),
            seed.BULLETIN_YTD - TypeCounts(50000, 20000, 100000, 200000),
        ),
    )
    return Section(
        point=SeriesPoint(snapshot, wow, None),
        workdays=working_days(W50),
        departments=None if departments is None else (departments or shares),
        year_series=(),
    )


def test_text_table_escapes_control_characters_in_names() -> None:
    from consumers.render.text import visible

    assert visible("民政\n厅") == "民政\\n厅"
    assert visible("公安厅") == "公安厅"
    assert visible("a\tb\x00") == "a\\tb\\x00"


def test_a_name_with_a_newline_keeps_its_table_row_on_one_line() -> None:
    from consumers.render.section import Table
    from consumers.render.text import table_lines

    table = Table(("单位", "咨询（人次）"), (("民政\n厅", "3"), ("公安厅", "4")), ("合计", "7"))
    lines = table_lines(table)
    assert not any("\n" in line for line in lines)
    assert any(line.startswith("民政\\n厅") for line in lines)
