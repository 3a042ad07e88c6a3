"""The bulletin's section 四(一) paragraph and its JSON form, from finalized figures."""

from __future__ import annotations

from typing import Any

from consumers.finalized import FinalizedWeek
from schemas.catalog import CATALOG
from schemas.figures import TypeCounts


def _clause(counts: TypeCounts) -> str:
    return "、".join(f"{c.label}{counts.get(t)}{c.unit}" for t, c in CATALOG.items())


def paragraph(weekly: TypeCounts, year_to_date: TypeCounts) -> str:
    """The exact sentence style of the user's bulletin (no stray spaces)."""
    return f"本周，共计{_clause(weekly)}。今年以来，累计{_clause(year_to_date)}。"


def as_json(snapshot: FinalizedWeek) -> dict[str, Any]:
    ytd_first, ytd_last = snapshot.ytd_range
    return {
        "week": str(snapshot.week),
        "week_start": snapshot.week.start.isoformat(),
        "week_end": snapshot.week.end.isoformat(),
        "ytd_start": ytd_first.isoformat(),
        "ytd_end": ytd_last.isoformat(),
        "version": snapshot.version,
        "finalized_at": snapshot.finalized_at.isoformat(),
        "content_hash": snapshot.content_hash,
        "weekly": snapshot.weekly.as_dict(),
        "year_to_date": snapshot.year_to_date.as_dict(),
        "text": paragraph(snapshot.weekly, snapshot.year_to_date),
    }
