"""Acceptance: the calibrated sample year through real Kafka, the worker and ClickHouse
reproduces section 四(一) of the user's 2024-W50 bulletin exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumers import bulletin
from consumers.finalize import finalize
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from terminals import sample
from terminals.emit import emit_file
from tests.support.services import ROOT, Worker

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

#: Section 四(一) of the user's bulletin, copied into the repository (tests read only it).
REFERENCE = ROOT / "tests" / "data" / "bulletin-2024-w50-section-4-1.txt"
PARAGRAPH = re.compile(
    r"本周，共计咨询\d+人次、受理\d+件、颁发\d+件、流转\d+件次。"
    r"今年以来，累计咨询\d+人次、受理\d+件、颁发\d+件、流转\d+件次。"
)


def reference_paragraph() -> str:
    if not REFERENCE.is_file():
        pytest.fail(f"the user's bulletin excerpt is expected at {REFERENCE}")
    text = re.sub(r"\s+", "", REFERENCE.read_text(encoding="utf-8"))
    match = PARAGRAPH.search(text)
    assert match is not None, f"section 四(一) paragraph not found in {REFERENCE}"
    return match.group(0)


def test_sample_year_reproduces_the_bulletin(
    isolated: Settings, worker: Worker, tmp_path: Path
) -> None:
    expected = reference_paragraph()
    data = tmp_path / "sample-2024.jsonl"
    sample.write_jsonl(data, sample.SampleSpec())  # with re-sends and invalid lines
    worker(isolated)
    # Send everything as it is, invalid lines included: the worker must sort them out.
    report = emit_file(data, isolated, validate=False)
    assert report.rejected == 0
    result = finalize(isolated, IsoWeek.parse("2024-W50"), timeout=1500)
    text = bulletin.paragraph(result.snapshot.weekly, result.snapshot.year_to_date)
    assert re.sub(r"\s+", "", text) == expected
