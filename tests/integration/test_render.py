"""``hallstats bulletin --format paragraph|text|markdown|json|docx|png`` against the real
ClickHouse.

The DOCX is converted to PDF by LibreOffice headlessly and its text read back
with pdftotext, as a user opening it in LibreOffice would see it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.render import chart, section
from consumers.render.text import display_width
from hallstats.clickhouse import connect, execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import CATALOG
from schemas.ddl import ensure_schema
from schemas.figures import TypeCounts
from tests.support import seed
from tests.support.render import plotted, texts
from tests.support.services import settings_env

pytestmark = pytest.mark.integration

PARAGRAPH = (
    "本周，共计咨询1627人次、受理578件、颁发3897件、流转5464件次。"
    "今年以来，累计咨询78946人次、受理32381件、颁发156964件、流转346703件次。"
)


@pytest.fixture(scope="module")
def seeded(stack: Settings) -> Iterator[Settings]:
    settings = stack.model_copy(update={"clickhouse_database": f"hs_render_{uuid.uuid4().hex[:8]}"})
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        seed.seed_year(client, settings)
        seed.store_snapshot(
            client, settings, IsoWeek(2023, 50), TypeCounts(1500, 600, 3900, 5000), TypeCounts()
        )
        yield settings
    finally:
        execute(
            client, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}", settings=settings
        )
        client.disconnect()


def hallstats(
    settings: Settings, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hallstats.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **settings_env(settings)},
        cwd=cwd,
        timeout=180,
    )


# A week whose working days a holiday moves: Monday 7 October 2024 is a National Day
# holiday, Saturday 12 October a make-up working day. Weeks 1-4 and 50 are finalized
# too, 5-38 and 42-49 are not: the year's chart has gaps.
HOLIDAY_WEEK = IsoWeek(2024, 41)
HOLIDAY_WEEKLY = TypeCounts(consult=321, accept=123, issue=789, transfer=1011)
HOLIDAY_YTD = TypeCounts(consult=9000, accept=4000, issue=20000, transfer=40000)
HOLIDAY_PARAGRAPH = (
    "本周，共计咨询321人次、受理123件、颁发789件、流转1011件次。"
    "今年以来，累计咨询9000人次、受理4000件、颁发20000件、流转40000件次。"
)
LONE_WEEKS = {
    IsoWeek(2024, w): TypeCounts(100 + w, 40 + w, 300 + w, 400 + w) for w in (1, 2, 3, 4, 50)
}


@pytest.fixture(scope="module")
def sparse(stack: Settings) -> Iterator[Settings]:
    """2024-W39..W41 from counters (W41 pinned, with departments), lone weeks 1-4 and
    50 without counters, and 2021-W01 (the issue's example) alone in its year."""
    settings = stack.model_copy(update={"clickhouse_database": f"hs_sparse_{uuid.uuid4().hex[:8]}"})
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        spec = seed.SeedSpec(
            first=IsoWeek(2024, 39),
            last=HOLIDAY_WEEK,
            pin=HOLIDAY_WEEK,
            weekly=HOLIDAY_WEEKLY,
            year_to_date=HOLIDAY_YTD,
        )
        seed.seed_year(client, settings, spec)
        for week, weekly in LONE_WEEKS.items():
            seed.store_snapshot(client, settings, week, weekly, weekly)
        seed.store_snapshot(
            client, settings, IsoWeek(2021, 1), TypeCounts(1, 2, 3, 4), TypeCounts(1, 2, 3, 4)
        )
        yield settings
    finally:
        execute(
            client, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}", settings=settings
        )
        client.disconnect()


def test_paragraph_is_the_bulletin_paragraph_exactly(seeded: Settings) -> None:
    for args in ((), ("--format", "paragraph")):  # the default stays the bare paragraph
        done = hallstats(seeded, "bulletin", "--week", "2024-W50", *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout == PARAGRAPH + "\n"


def test_text_section_of_a_holiday_week(sparse: Settings) -> None:
    done = hallstats(sparse, "bulletin", "--week", str(HOLIDAY_WEEK), "--format", "text")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.rstrip("\n").split("\n\n")
    assert blocks[:3] == [
        "（10月8日—10月12日）",
        "四、综窗改革攻坚行动\n（一）省本级综窗办件情况",
        HOLIDAY_PARAGRAPH,
    ]
    weekly, ytd = blocks[3].splitlines(), blocks[4].splitlines()
    assert weekly[0] == "各部门办件情况"
    weekly = weekly[1:]
    assert weekly[0].split() == ["部门", *(f"本周{c.label}" for c in CATALOG.values())]
    assert ytd[0].split() == ["部门", *(f"累计{c.label}" for c in CATALOG.values())]
    totals = [*HOLIDAY_WEEKLY.as_dict().values(), *HOLIDAY_YTD.as_dict().values()]
    assert weekly[-1].split() == ["合计", *map(str, totals[:4])]
    assert ytd[-1].split() == ["合计", *map(str, totals[4:])]
    for lines in (weekly, ytd):
        assert len(lines) == 2 + 1 + 9 + 1 + 1  # header and units, rule, 9 rows, rule, 合计
        # Aligned in a monospace terminal: figures end in one column, CJK counted double.
        assert len({display_width(line) for line in lines}) == 1
        assert display_width(lines[0]) <= 80
    # The same cells as the Markdown table (both render the one Section).
    markdown = hallstats(sparse, "bulletin", "--week", str(HOLIDAY_WEEK), "--format", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    md_rows = [
        [c.strip().strip("*") for c in row.strip("|").split("|")]
        for row in markdown.stdout.split("\n\n")[4].splitlines()[2:]
    ]
    text_rows = {line.split()[0]: line.split()[1:] for line in weekly[3:-2] + weekly[-1:]}
    for line in ytd[3:-2] + ytd[-1:]:
        text_rows[line.split()[0]] += line.split()[1:]
    assert text_rows == {row[0]: row[1:] for row in md_rows}
    assert list(text_rows) == [row[0] for row in md_rows]  # same order: largest first
    assert blocks[5].startswith("与上周相比，咨询")  # 2024-W40 is finalized
    assert len(blocks) == 6  # no 同比: 2023-W41 is not finalized


def test_text_section_names_the_issues_example_week(sparse: Settings) -> None:
    done = hallstats(sparse, "bulletin", "--week", "2021-W01", "--format", "text")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.rstrip("\n").split("\n\n")
    assert blocks[0] == "（1月4日—1月8日）"
    assert blocks[3] == "（2021-W01 第1版未保存分部门数据。）"
    assert blocks[4] == "上周（2020-W53）数据尚未定版，暂无环比。"


def test_chart_of_a_year_with_unfinalized_gaps(sparse: Settings, tmp_path: Path) -> None:
    shown = section.load(sparse, HOLIDAY_WEEK)
    figures = {p.snapshot.week: p.snapshot.weekly for p in shown.year_series}
    assert sorted(figures) == sorted([*LONE_WEEKS, *(IsoWeek(2024, w) for w in (39, 40, 41))])
    plot = chart.plot_data(shown.year_series, 2024)
    assert plot.shown == 8
    assert plot.caption() == "图中显示已定版的8周（全年52周）；未定版的周留空，不与相邻周连线。"
    fig = chart.figure(shown.year_series, 2024, highlight=HOLIDAY_WEEK)
    for (xs, ys), event_type in zip(plotted(fig), CATALOG, strict=True):
        drawn = {x: y for x, y in zip(xs, ys, strict=True) if not math.isnan(y)}
        assert drawn == {w.week: float(c.get(event_type)) for w, c in figures.items()}
        # NaN between the runs: matplotlib draws three pieces, never 4 -> 39 or 41 -> 50.
        assert all(math.isnan(y) for x, y in zip(xs, ys, strict=True) if 5 <= x <= 38)
        assert all(math.isnan(y) for x, y in zip(xs, ys, strict=True) if 42 <= x <= 49)
    assert figures[HOLIDAY_WEEK] == HOLIDAY_WEEKLY
    assert plot.caption() in texts(fig)
    done = hallstats(
        sparse, "bulletin", "--week", str(HOLIDAY_WEEK), "--format", "png", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"bulletin-{HOLIDAY_WEEK}.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_section(seeded: Settings, tmp_path: Path) -> None:
    done = hallstats(seeded, "bulletin", "--week", "2024-W50", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.strip().split("\n\n")
    assert blocks[:4] == [
        "（12月9日—12月13日）",
        "## 四、综窗改革攻坚行动",
        "### （一）省本级综窗办件情况",
        PARAGRAPH,
    ]
    rows = blocks[4].splitlines()
    assert len(rows) == 2 + 9 + 1  # header, rule, nine departments, 合计
    assert rows[-1].replace("*", "") == (
        "| 合计 | 1627 | 578 | 3897 | 5464 | 78946 | 32381 | 156964 | 346703 |"
    )
    assert blocks[5].startswith("与上周相比，咨询")
    assert blocks[6].startswith("与去年同期相比，咨询增加127人次（增长8.5%）")
    out = tmp_path / "s.md"
    assert (
        hallstats(
            seeded, "bulletin", "--week", "2024-W50", "--format", "markdown", "--output", str(out)
        ).returncode
        == 0
    )
    assert out.read_text() == done.stdout


def test_json_section(seeded: Settings) -> None:
    done = hallstats(seeded, "bulletin", "--week", "2024-W50", "--format", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["text"] == PARAGRAPH
    assert body["header_range"] == "12月9日—12月13日" and body["official_calendar"] is True
    assert body["working_days"][0] == "2024-12-09" and len(body["working_days"]) == 5
    total = TypeCounts()
    for entry in body["departments"]:
        total = total + TypeCounts.from_mapping(entry["weekly"])
    assert total == seed.BULLETIN_WEEKLY
    assert body["week_over_week"]["compared_with"] == "2024-W49"
    assert body["year_over_year"]["consult"] == {"previous": 1500, "diff": 127, "percent": 8.47}


def test_png_chart_of_the_year(seeded: Settings, tmp_path: Path) -> None:
    done = hallstats(seeded, "bulletin", "--week", "2024-W50", "--format", "png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    png = (tmp_path / "bulletin-2024-W50.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_docx_opens_in_libreoffice(seeded: Settings, tmp_path: Path) -> None:
    soffice, pdftotext = shutil.which("soffice"), shutil.which("pdftotext")
    assert soffice and pdftotext, (
        "LibreOffice (soffice) and poppler-utils (pdftotext) are required: "
        "run deploy/install-system-deps.sh"
    )
    target = tmp_path / "section.docx"
    done = hallstats(
        seeded, "bulletin", "--week", "2024-W50", "--format", "docx", "--output", str(target)
    )
    assert done.returncode == 0, done.stderr
    converted = subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}",  # no shared profile lock
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(tmp_path),
            str(target),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    pdf = tmp_path / "section.pdf"
    assert pdf.is_file(), converted.stdout + converted.stderr
    text = subprocess.run(
        [pdftotext, "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    flat = re.sub(r"\s+", "", text)  # PDF text extraction spaces CJK and digits apart
    assert "（12月9日—12月13日）" in flat
    assert "四、综窗改革攻坚行动（一）省本级综窗办件情况" in flat
    assert PARAGRAPH in flat
    totals = [*seed.BULLETIN_WEEKLY.as_dict().values(), *seed.BULLETIN_YTD.as_dict().values()]
    assert "合计" + "".join(map(str, totals)) in flat  # the table's last row
    assert "与上周相比，咨询" in flat


def test_unfinalized_week_and_missing_version(seeded: Settings) -> None:
    for args in (("--week", "2025-W02"), ("--week", "2024-W50", "--version", "7")):
        for fmt in ("paragraph", "text", "markdown", "docx"):
            done = hallstats(seeded, "bulletin", *args, "--format", fmt)
            assert done.returncode == 2, (args, fmt, done.stderr)
            assert "expected" in done.stderr


def test_chart_highlights_the_version_rendered(stack: Settings) -> None:
    """``--version N`` shows vN in the chart too, not the week's latest version."""
    from datetime import UTC, datetime

    from consumers import finalized

    settings = stack.model_copy(update={"clickhouse_database": f"hs_chart_{uuid.uuid4().hex[:8]}"})
    week = IsoWeek(2024, 50)
    first = TypeCounts(consult=10, accept=20, issue=30, transfer=40)
    second = TypeCounts(consult=11, accept=21, issue=31, transfer=41)
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        for version, weekly in ((1, first), (2, second)):
            snapshot = finalized.FinalizedWeek(
                week,
                version,
                datetime(2024, 12, 17, version, tzinfo=UTC),
                weekly,
                weekly,
                finalized.content_hash(week, weekly, weekly),
            )
            finalized.store(client, settings, snapshot)
        for version, weekly in ((1, first), (2, second), (None, second)):
            shown = section.load(settings, week, version)
            points = {p.snapshot.week: p.snapshot.weekly for p in shown.year_series}
            assert points[week] == weekly, version
            plot = chart.plot_data(shown.year_series, 2024)
            assert [plot.values[t][week.week - 1] for t in CATALOG] == [
                weekly.get(t) for t in CATALOG
            ]
    finally:
        execute(
            client, f"DROP DATABASE IF EXISTS {settings.clickhouse_database}", settings=settings
        )
        client.disconnect()
