"""``hallstats bulletin --format text|markdown|json|docx|png`` against the real ClickHouse.

The DOCX is converted to PDF by LibreOffice headlessly and its text read back
with pdftotext, as a user opening it in LibreOffice would see it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.clickhouse import connect, ensure_schema, execute
from hallstats import seed
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.figures import TypeCounts
from tests.conftest import settings_env

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


def test_text_is_the_bulletin_paragraph_exactly(seeded: Settings) -> None:
    done = hallstats(seeded, "bulletin", "--week", "2024-W50")
    assert done.returncode == 0, done.stderr
    assert done.stdout == PARAGRAPH + "\n"


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
        for fmt in ("text", "markdown", "docx"):
            done = hallstats(seeded, "bulletin", *args, "--format", fmt)
            assert done.returncode == 2, (args, fmt, done.stderr)
            assert "expected" in done.stderr
