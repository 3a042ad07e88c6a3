"""What the read API accepts: its path and query parameters as the OpenAPI spec declares
them (patterns and bounds), and what each expects, said in words for error messages.

The spec promises no more than the API accepts; the handlers check again what a
pattern cannot say (see :mod:`consumers.api.errors`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Query

from schemas.calendar import weeks_in_year
from schemas.events import MAX_NAME_CHARS

MIN_YEAR, MAX_YEAR = 2000, 2999  # events before 2000 are rejected at intake


def _week_pattern() -> str:
    """Exactly the existing ISO weeks of MIN_YEAR..MAX_YEAR, so that the spec promises
    no more than the API accepts (W53 only in the years that have one)."""
    long_years = "|".join(str(y) for y in range(MIN_YEAR, MAX_YEAR + 1) if weeks_in_year(y) == 53)
    return rf"^(?:2\d{{3}}-W(?:0[1-9]|[1-4]\d|5[0-2])|(?:{long_years})-W53)$"


WEEK_PATTERN = _week_pattern()
# A name: no control characters and not only white space (checked again by is_name).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: What a pattern-checked input expects, for messages (rather than the long pattern).
EXPECTED = {
    "week": f"an existing ISO week YYYY-Www of the years {MIN_YEAR}..{MAX_YEAR}",
    "department": "a name without control characters, not blank",
    "hall": "a name without control characters, not blank",
}


def is_name(value: str) -> bool:
    """A department or hall name: not blank, no control characters."""
    return bool(value.strip()) and not _CONTROL.search(value)


WeekPath = Annotated[
    str,
    Path(
        pattern=WEEK_PATTERN,
        description=f"ISO week `YYYY-Www` of {MIN_YEAR}..{MAX_YEAR}, e.g. 2024-W50",
        examples=["2024-W50"],
    ),
]
VersionQuery = Annotated[
    int | None,
    Query(ge=1, le=2**32 - 1, description="A given finalized version (default: the latest)"),
]
YearPath = Annotated[int, Path(ge=MIN_YEAR, le=MAX_YEAR, description="ISO week-year")]


def name_query(field: str) -> Any:
    return Query(
        min_length=1,
        pattern=NAME_PATTERN,
        max_length=MAX_NAME_CHARS,
        description=f"Only this {field} (exact name as terminals send it)",
    )
