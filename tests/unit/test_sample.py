"""The calibrated sample, recounted independently of the generator's own bookkeeping.

Why: every pipeline test trusts this sample's true figures. The recount here parses
each line like a strict consumer would (validate, convert to the LOCAL date, dedup by
event_id) and must land exactly on the bulletin's figures, 四(一) of 2024-W50.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hallstats.errors import DataError
from terminals.sample import Counts, SampleSpec, expected_counts, generate, write_jsonl

SHANGHAI = ZoneInfo("Asia/Shanghai")
TYPES = ("consult", "accept", "issue", "transfer")
BULLETIN_WEEK = {"consult": 1627, "accept": 578, "issue": 3897, "transfer": 5464}
BULLETIN_YTD = {"consult": 78946, "accept": 32381, "issue": 156964, "transfer": 346703}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
OFFICE_HOURS = ((time(9), time(12)), (time(13, 30), time(17, 30)))
BULLETIN_DEPARTMENTS = {
    "经济和信息化厅",
    "住房城乡建设厅",
    "卫生健康委",
    "民政厅",
    "广电局",
    "自然资源厅",
    "交通运输厅",
    "商务厅",
    "药监局",
}

# occurred_at as written -> (type, counts in 2024-W50, counts in YTD), by LOCAL date.
BOUNDARY = {
    "2024-12-08T16:00:00Z": ("accept", True, True),  # local Mon 12-09 00:00
    "2024-12-08T16:30:00Z": ("consult", True, True),  # local Mon 12-09 00:30
    "2024-12-09T07:30:00+08:00": ("issue", True, True),  # UTC date 12-08
    "2024-12-08T15:59:59Z": ("issue", False, True),  # local Sun 12-08 23:59:59, W49
    "2024-12-13T10:45:00Z": ("transfer", True, True),  # Friday overtime 18:45
    "2024-12-15T23:59:59+08:00": ("transfer", True, True),  # last second of W50
    "2024-12-15T16:00:00Z": ("accept", False, False),  # local Mon 12-16 00:00, W51
    "2024-12-15T23:30:00Z": ("consult", False, False),  # local Mon 12-16 07:30, W51
    "2023-12-31T16:30:00Z": ("consult", False, True),  # local 2024-01-01 00:30
    "2024-12-29T16:30:00Z": ("transfer", False, False),  # local 12-30, ISO 2025-W01
    "2024-12-31T23:59:59+08:00": ("issue", False, False),  # last second of 2024
}


UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


def _parse(line: str) -> tuple[dict[str, Any], datetime] | None:
    """The object and its aware instant if the line is a valid event, else None."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    version, event_id, stamp = (
        obj.get("schema_version"),
        obj.get("event_id"),
        obj.get("occurred_at"),
    )
    if type(version) is not int or version != 1 or obj.get("event_type") not in TYPES:
        return None
    if not isinstance(event_id, str) or not UUID.match(event_id):
        return None
    if not isinstance(stamp, str) or not RFC3339.match(stamp):
        return None
    if not (_name(obj.get("hall_id")) and _name(obj.get("window_id"))):
        return None
    if not _name(obj.get("department")):
        return None
    try:
        instant = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (obj, instant) if instant.tzinfo is not None else None


@dataclass
class Recount:
    """What a strict consumer sees in one pass over the stream."""

    lines: int = 0
    sha256: str = ""
    head: list[str] = field(default_factory=list)
    valid_sha256: str = ""  # first occurrences only, in stream order
    week: Counter[str] = field(default_factory=Counter)
    ytd: Counter[str] = field(default_factory=Counter)
    utc_week: Counter[str] = field(default_factory=Counter)  # what a UTC-date pipeline gets
    utc_ytd: Counter[str] = field(default_factory=Counter)
    per_iso_week: Counter[tuple[int, int]] = field(default_factory=Counter)
    invalid: int = 0
    resends: int = 0
    conflicts: int = 0
    out_of_order: int = 0
    off_hours: int = 0  # non-boundary events outside Mon-Fri office hours
    outside_year: int = 0
    boundary: dict[str, tuple[str, date]] = field(default_factory=dict)
    halls: dict[str, set[str]] = field(default_factory=dict)
    departments: set[str] = field(default_factory=set)
    forms: Counter[str] = field(default_factory=Counter)


def recount(lines: Iterable[str], year: int = 2024, week: int = 50) -> Recount:
    """One strict pass: validate, dedup by event_id, count by LOCAL date (and by UTC date)."""
    r = Recount()
    digest, valid_digest = hashlib.sha256(), hashlib.sha256()
    seen: dict[str, int] = {}
    by_day: Counter[tuple[date, date, str]] = Counter()  # (local date, UTC date, type)
    desks: set[tuple[str, str, str]] = set()
    previous: datetime | None = None
    for line in lines:
        r.lines += 1
        raw = line.encode() + b"\n"
        digest.update(raw)
        if len(r.head) < 1000:
            r.head.append(line)
        parsed = _parse(line)
        if parsed is None:
            r.invalid += 1
            continue
        obj, instant = parsed
        event_id, event_type, stamp = obj["event_id"].lower(), obj["event_type"], obj["occurred_at"]
        if event_id in seen:
            r.resends += 1
            r.conflicts += seen[event_id] != hash(line)
            continue
        seen[event_id] = hash(line)
        valid_digest.update(raw)
        r.out_of_order += previous is not None and instant < previous
        previous = instant

        local = instant.astimezone(SHANGHAI)
        by_day[local.date(), instant.astimezone(UTC).date(), event_type] += 1
        r.forms["Z" if stamp[-1] == "Z" else stamp[-6:]] += 1
        desks.add((obj["hall_id"], obj["window_id"], obj["department"]))
        if stamp in BOUNDARY:
            r.boundary[stamp] = (event_type, local.date())
        elif local.weekday() >= 5 or not any(a <= local.time() < b for a, b in OFFICE_HOURS):
            r.off_hours += 1

    monday = date.fromisocalendar(year, week, 1)
    sunday, jan1 = monday + timedelta(days=6), date(year, 1, 1)
    for (day, utc_day, event_type), n in by_day.items():
        r.per_iso_week[day.isocalendar()[:2]] += n
        r.outside_year += n * (day.year != year)
        if monday <= day <= sunday:
            r.week[event_type] += n
        if jan1 <= day <= sunday:
            r.ytd[event_type] += n
        if monday <= utc_day <= sunday:
            r.utc_week[event_type] += n
        if jan1 <= utc_day <= sunday:
            r.utc_ytd[event_type] += n
    for hall, window, department in desks:
        r.halls.setdefault(hall, set()).add(window)
        r.departments.add(department)
    r.sha256, r.valid_sha256 = digest.hexdigest(), valid_digest.hexdigest()
    return r


def sha256_of(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


@pytest.fixture(scope="module")
def default() -> Recount:
    return recount(generate())


def test_recount_hits_the_bulletin_figures_exactly(default: Recount) -> None:
    assert dict(default.week) == BULLETIN_WEEK
    assert dict(default.ytd) == BULLETIN_YTD
    assert expected_counts() == {"week": BULLETIN_WEEK, "ytd": BULLETIN_YTD}


def test_noise_is_present_and_does_not_count(default: Recount) -> None:
    assert default.invalid == 20
    assert default.conflicts == 0  # a re-send is the same line, byte for byte
    distinct = default.lines - default.invalid - default.resends
    assert 0.001 * distinct < default.resends < 0.003 * distinct
    assert 600_000 < distinct < 700_000


def test_event_ids_are_random_v4_uuids(default: Recount) -> None:
    for line in default.head:
        if (parsed := _parse(line)) is not None:
            event_id = parsed[0]["event_id"]
            assert str(uuid.UUID(event_id)) == event_id
            assert uuid.UUID(event_id).version == 4


def test_same_spec_same_bytes(default: Recount) -> None:
    assert list(itertools.islice(generate(), 1000)) == default.head
    assert sha256_of(generate()) == default.sha256


def test_noise_knobs_leave_the_valid_events_untouched(default: Recount) -> None:
    clean = generate(SampleSpec(resend_rate=0.0, invalid_count=0))
    # Equal to the default's valid first occurrences, in order: nothing else moved.
    assert sha256_of(clean) == default.valid_sha256


def test_boundary_cases_count_by_local_date(default: Recount) -> None:
    assert set(default.boundary) == set(BOUNDARY)
    monday, sunday = date(2024, 12, 9), date(2024, 12, 15)
    for stamp, (event_type, in_week, in_ytd) in BOUNDARY.items():
        got_type, local_day = default.boundary[stamp]
        assert got_type == event_type, stamp
        assert (monday <= local_day <= sunday) == in_week, stamp
        assert (date(2024, 1, 1) <= local_day <= sunday) == in_ytd, stamp
    # ... and they bite: grouping by the UTC date gets both figures wrong.
    assert dict(default.utc_week) != BULLETIN_WEEK
    assert dict(default.utc_ytd) != BULLETIN_YTD


def test_looks_like_a_real_year(default: Recount) -> None:
    assert default.out_of_order == 0  # first occurrences replay in time order
    assert default.off_hours == 0  # only boundary cases leave Mon-Fri office hours
    assert default.outside_year == 0
    assert "hall-provincial" in default.halls and len(default.halls) >= 3
    assert all(len(windows) >= 5 for windows in default.halls.values())
    assert default.departments >= BULLETIN_DEPARTMENTS
    assert default.forms["Z"] > 10_000 and default.forms["+08:00"] > 10_000
    # The weeks after W50 carry a similar load (W51, W52; 2025-W01 holds Dec 30-31).
    w50 = default.per_iso_week[(2024, 50)]
    assert w50 == sum(BULLETIN_WEEK.values())
    for later in ((2024, 51), (2024, 52)):
        assert 0.7 * w50 < default.per_iso_week[later] < 1.4 * w50
    assert default.per_iso_week[(2025, 1)] > 0


@settings(max_examples=25, deadline=None)
@given(
    week=st.integers(1, 52),
    weekly=st.lists(st.integers(3, 60), min_size=4, max_size=4),
    before=st.lists(st.integers(3, 400), min_size=4, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_any_small_spec_calibrates_exactly(
    week: int, weekly: list[int], before: list[int], seed: int
) -> None:
    if week == 1:  # 2024-W01 starts on Jan 1: nothing comes before it
        before = [0, 0, 0, 0]
    ytd = [w + b for w, b in zip(weekly, before, strict=True)]
    spec = SampleSpec(seed=seed, week=week, week_targets=Counts(*weekly), ytd_targets=Counts(*ytd))
    r = recount(generate(spec), week=week)
    assert [r.week[t] for t in TYPES] == weekly
    assert [r.ytd[t] for t in TYPES] == ytd
    assert r.invalid == spec.invalid_count
    assert r.conflicts == r.out_of_order == r.outside_year == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"week": 53},  # 2024 has 52 ISO weeks
        {"resend_rate": 1.0},
        {"invalid_count": -1},
        {"timezone": "Mars/Olympus"},
        {"week_targets": Counts(0, 0, 0, 0)},  # below the fixed boundary events
        {"ytd_targets": Counts(1627, 578, 3897, 5000)},  # year to date below the week
    ],
)
def test_impossible_specs_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DataError):
        SampleSpec(**kwargs)


def test_write_jsonl_writes_what_generate_yields(tmp_path: Path) -> None:
    spec = SampleSpec(week_targets=Counts(5, 5, 5, 5), ytd_targets=Counts(90, 90, 90, 90))
    calls: list[int] = []
    path = tmp_path / "sample.jsonl"
    written = write_jsonl(path, spec, progress=calls.append)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert text.splitlines() == list(generate(spec))
    assert written == len(text.splitlines()) == calls[-1]
    assert not list(tmp_path.glob("*.part"))
