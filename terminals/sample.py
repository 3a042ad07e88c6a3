"""A deterministic, realistic year of window-terminal events with known true figures.

Why: the pipeline must reproduce the bulletin's figures to the unit, so tests and the
end-to-end replay need input whose exact counts are known in advance. The sample is
calibrated so that ISO week ``spec.week`` (local calendar, ``spec.timezone``) and the
year to date (local Jan 1 .. that week's Sunday) hold exactly the target counts of
distinct valid events per type; everything else (the rest of the year, re-sends,
invalid lines) is noise a correct pipeline must place or drop without changing them.

This module turns the plan into lines and is the one callers import; the parts live by
job: the spec, the bulletin targets and the boundary events in
:mod:`terminals.sample_spec`, the calibration (how many events each day gets, and the
true figures) in :mod:`terminals.sample_plan`. Three independent seeded
``random.Random`` streams (plan, events, noise) keep the valid events identical
whatever the re-send and invalid-line knobs are set to.
"""

from __future__ import annotations

import heapq
import json
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from schemas.catalog import EventType
from terminals.sample_plan import expected_counts, plan
from terminals.sample_spec import (
    BULLETIN_WEEK,
    BULLETIN_YTD,
    DEFAULT_SPEC,
    EVENT_TYPES,
    TYPE_INDEX,
    Counts,
    Fixed,
    SampleSpec,
    boundary_events,
)

__all__ = [
    "BULLETIN_WEEK",
    "BULLETIN_YTD",
    "DEFAULT_SPEC",
    "EVENT_TYPES",
    "Counts",
    "SampleSpec",
    "expected_counts",
    "generate",
    "write_jsonl",
]

_CONSULT: Final = TYPE_INDEX[EventType.CONSULT]
_ACCEPT: Final = TYPE_INDEX[EventType.ACCEPT]

# Office hours in local time, as [start, end) milliseconds of the day.
_MORNING: Final = (9 * 3_600_000, 12 * 3_600_000)
_AFTERNOON: Final = (13 * 3_600_000 + 30 * 60_000, 17 * 3_600_000 + 30 * 60_000)
_MORNING_SHARE: Final = 0.45

_DEPT_CODE: Final = {
    "经济和信息化厅": "JXT",
    "住房城乡建设厅": "ZJT",
    "卫生健康委": "WJW",
    "民政厅": "MZT",
    "广电局": "GDJ",
    "自然资源厅": "ZRT",
    "交通运输厅": "JTT",
    "商务厅": "SWT",
    "药监局": "YJJ",
    "人力资源社会保障厅": "RST",
    "市场监管局": "SJJ",
    "公安厅": "GAT",
    "发展改革委": "FGW",
    "生态环境厅": "STT",
}


@dataclass(frozen=True)
class _Hall:
    hall_id: str
    windows: int
    departments: tuple[str, ...]
    share: float  # share of the traffic
    utc_share: float  # share of terminals that send 'Z' timestamps
    millis: bool  # terminals that send milliseconds


_HALLS: Final = (
    _Hall(
        "hall-provincial",
        20,
        (
            "经济和信息化厅",
            "住房城乡建设厅",
            "卫生健康委",
            "民政厅",
            "广电局",
            "自然资源厅",
            "交通运输厅",
            "商务厅",
            "药监局",
            "人力资源社会保障厅",
            "市场监管局",
        ),
        share=0.62,
        utc_share=0.1,
        millis=False,
    ),
    _Hall(
        "hall-departmental",
        8,
        ("住房城乡建设厅", "人力资源社会保障厅", "公安厅", "民政厅", "卫生健康委"),
        share=0.23,
        utc_share=0.0,
        millis=False,
    ),
    _Hall(
        "hall-investment",
        6,
        ("发展改革委", "自然资源厅", "生态环境厅", "住房城乡建设厅", "交通运输厅", "商务厅"),
        share=0.15,
        utc_share=1.0,
        millis=True,
    ),
)


@dataclass(frozen=True)
class _Desk:
    """One window of one hall, with its JSON fragments pre-encoded (speed)."""

    hall: _Hall
    window_id: str
    primary: str
    hall_json: str
    window_json: str


def _j(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _desks() -> tuple[list[_Desk], list[float]]:
    desks: list[_Desk] = []
    weights: list[float] = []
    for hall in _HALLS:
        # Fixed, uneven window loads: some windows are always busier.
        raw = [1.0 + 0.5 * ((i * 7) % 5) / 4 for i in range(1, hall.windows + 1)]
        for i, w in enumerate(raw, start=1):
            window_id = f"W{i:02d}"
            primary = hall.departments[(i - 1) % len(hall.departments)]
            desks.append(_Desk(hall, window_id, primary, _j(hall.hall_id), _j(window_id)))
            weights.append(hall.share * w / sum(raw))
    return desks, list(accumulate(weights))


def _office_ms(rnd: Callable[[], float]) -> int:
    start, end = _MORNING if rnd() < _MORNING_SHARE else _AFTERNOON
    return start + int(rnd() * (end - start))


def _rfc3339(local: datetime, utc_form: bool, millis: bool) -> str:
    spec = "milliseconds" if millis else "seconds"
    if utc_form:
        return local.astimezone(UTC).isoformat(timespec=spec)[:-6] + "Z"
    return local.isoformat(timespec=spec)


_UUID_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_V4: Final = (0x4000 << 64) | (0x8000 << 48)


def _uuid(rng: random.Random) -> str:
    """Same text as ``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, 3x faster."""
    h = f"{(rng.getrandbits(128) & _UUID_CLEAR) | _UUID_V4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_INVALID_KINDS: Final = (
    "truncated_json",
    "naive_timestamp",
    "unknown_event_type",
    "missing_department",
    "empty_window_id",
    "department_too_long",
    "schema_version_2",
    "bad_event_id",
    "date_only_timestamp",
    "not_an_object",
    "impossible_date",
    "missing_hall_id",
)


def _invalid_line(kind: str, rng: random.Random, day: date, offset: str) -> str:
    """A line a validator must reject; its event_id is fresh, so it never shadows a real one."""
    hh, mm = rng.randint(9, 16), rng.randint(0, 59)
    stamp = f"{day.isoformat()}T{hh:02d}:{mm:02d}:00"
    event: dict[str, object] = {
        "schema_version": 1,
        "event_id": _uuid(rng),
        "event_type": EVENT_TYPES[rng.randrange(len(EVENT_TYPES))],
        "occurred_at": stamp + offset,
        "hall_id": "hall-provincial",
        "window_id": f"W{rng.randint(1, 20):02d}",
        "department": "民政厅",
    }
    if kind == "naive_timestamp":
        event["occurred_at"] = stamp
    elif kind == "unknown_event_type":
        event["event_type"] = "complaint"
    elif kind == "missing_department":
        del event["department"]
    elif kind == "empty_window_id":
        event["window_id"] = ""
    elif kind == "department_too_long":
        event["department"] = "经济和信息化厅" * 10
    elif kind == "schema_version_2":
        event["schema_version"] = 2
    elif kind == "bad_event_id":
        event["event_id"] = "not-a-uuid-" + day.isoformat()
    elif kind == "date_only_timestamp":
        event["occurred_at"] = day.isoformat()
    elif kind == "impossible_date":
        event["occurred_at"] = f"{day.year}-02-30T10:00:00{offset}"
    elif kind == "missing_hall_id":
        del event["hall_id"]
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    if kind == "truncated_json":
        return text[: len(text) // 2]
    if kind == "not_an_object":
        return json.dumps([event["event_type"], event["occurred_at"]], separators=(",", ":"))
    return text


def _invalid_positions(
    spec: SampleSpec,
    regular: dict[date, list[int]],
    fixed_by_day: dict[date, list[Fixed]],
    rng: random.Random,
) -> list[int]:
    """Valid-event indexes before which an invalid line goes; a quarter inside the week.

    The calibrated week is where a pipeline that counts invalid lines would be caught.
    """
    per_day = {d: sum(c) for d, c in regular.items()}
    for d, fixed in fixed_by_day.items():
        per_day[d] = per_day.get(d, 0) + len(fixed)
    total = sum(per_day.values())
    before = sum(n for d, n in per_day.items() if d < spec.week_start)
    within = sum(n for d, n in per_day.items() if spec.week_start <= d <= spec.week_end)
    in_week = min(spec.invalid_count // 4, within)
    chosen = set(rng.sample(range(before, before + within), k=in_week))
    rest = [i for i in range(total) if i not in chosen] if chosen else range(total)
    chosen.update(rng.sample(rest, k=min(spec.invalid_count - in_week, len(rest))))
    return sorted(chosen)


def generate(spec: SampleSpec = DEFAULT_SPEC) -> Iterator[str]:
    """Yield the sample as JSON lines (no newline), in the order terminals would send them.

    Valid first occurrences are in non-decreasing order of instant; re-sends follow
    their original 1..5000 lines later; invalid lines sit among the day they claim.
    """
    zone = ZoneInfo(spec.timezone)
    regular_by_day = plan(spec)
    fixed_by_day: dict[date, list[Fixed]] = {}
    for f in boundary_events(spec):
        fixed_by_day.setdefault(f.local.date(), []).append(f)
    desks, cum = _desks()
    total_weight = cum[-1]
    millis = [d.hall.millis for d in desks]

    ev = random.Random(f"{spec.seed}:events")  # everything about valid events
    rnd = ev.random
    noise = random.Random(f"{spec.seed}:noise")  # re-sends and invalid lines only
    invalid_at = _invalid_positions(spec, regular_by_day, fixed_by_day, noise)
    invalid_at.append(-1)  # sentinel
    next_invalid = 0
    resends: list[tuple[int, int, str]] = []  # (emit when `emitted` reaches, seq, line)
    emitted = 0

    case_seq = 0
    cases = [f"ZW{spec.year - 1}{n:08d}" for n in range(1, 501)]  # carried over
    case_cap = 5000
    type_json = [_j(t) for t in EVENT_TYPES]
    dept_json = {d: _j(d) for d in _DEPT_CODE}
    offset = datetime(spec.year, 6, 1, tzinfo=zone).isoformat()[-6:]

    valid_index = 0
    day = date(spec.year, 1, 1)
    while day.year == spec.year:
        regular = regular_by_day.get(day, ())
        fixed = fixed_by_day.get(day, [])
        current = day
        day += timedelta(days=1)
        if not any(regular) and not fixed:
            continue
        # (ms of local day, type index, index into `fixed` or -1, desk index). The desk is
        # drawn before sorting so second-precision terminals sort by what they will send.
        items: list[tuple[int, int, int, int]] = []
        for ti, n in enumerate(regular):
            for _ in range(n):
                di = bisect_right(cum, rnd() * total_weight)
                ms = _office_ms(rnd)
                items.append((ms if millis[di] else ms - ms % 1000, ti, -1, di))
        for k, f in enumerate(fixed):
            ms = ((f.local.hour * 60 + f.local.minute) * 60 + f.local.second) * 1000
            di = bisect_right(cum, rnd() * total_weight)
            items.append((ms, TYPE_INDEX[f.event_type], k, di))
        items.sort()
        midnight = datetime(current.year, current.month, current.day, tzinfo=zone)

        for ms, ti, k, di in items:
            if valid_index == invalid_at[next_invalid]:
                kind = _INVALID_KINDS[next_invalid % len(_INVALID_KINDS)]
                yield _invalid_line(kind, noise, current, offset)
                emitted += 1
                next_invalid += 1
            valid_index += 1

            desk = desks[di]
            hall = desk.hall
            department = desk.primary
            if rnd() < 0.15:  # comprehensive windows take other departments' items
                department = hall.departments[int(rnd() * len(hall.departments))]
            local = midnight + timedelta(milliseconds=ms)
            if k >= 0:
                stamp = _rfc3339(local, fixed[k].utc_form, millis=False)
            else:
                stamp = _rfc3339(local, rnd() < hall.utc_share, hall.millis)

            case = ""  # consultations have no case
            if ti == _ACCEPT:  # accept opens a case
                case_seq += 1
                case = f"ZW{spec.year}{case_seq:08d}"
                if len(cases) < case_cap:
                    cases.append(case)
                else:
                    cases[case_seq % case_cap] = case
            elif ti != _CONSULT:  # issue and transfer act on a recent case
                case = cases[int(rnd() * len(cases))]
            item_part = ""
            if rnd() < (0.5 if ti == _CONSULT else 0.92):
                item_part = f',"item_code":"{_DEPT_CODE[department]}-{1 + int(rnd() * 48):04d}"'
            case_part = f',"case_id":"{case}"' if case else ""
            line = (
                f'{{"schema_version":1,"event_id":"{_uuid(ev)}","event_type":{type_json[ti]},'
                f'"occurred_at":"{stamp}","hall_id":{desk.hall_json},'
                f'"window_id":{desk.window_json},"department":{dept_json[department]}'
                f"{item_part}{case_part}}}"
            )
            yield line
            emitted += 1
            if spec.resend_rate and noise.random() < spec.resend_rate:
                heapq.heappush(resends, (emitted + noise.randint(1, 5000), emitted, line))
            while resends and resends[0][0] <= emitted:
                yield heapq.heappop(resends)[2]
                emitted += 1
    while resends:
        yield heapq.heappop(resends)[2]


def write_jsonl(
    path: Path,
    spec: SampleSpec = DEFAULT_SPEC,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the sample to ``path`` (UTF-8, one event per line); return the line count.

    Written to a sibling temporary file and renamed, so a reader never sees half a year.
    """
    tmp = path.with_name(path.name + ".part")
    written = 0
    chunk: list[str] = []
    with tmp.open("w", encoding="utf-8", newline="\n") as out:
        for line in generate(spec):
            chunk.append(line)
            written += 1
            if len(chunk) == 50_000:
                out.write("\n".join(chunk) + "\n")
                chunk.clear()
                if progress is not None:
                    progress(written)
        if chunk:
            out.write("\n".join(chunk) + "\n")
    tmp.replace(path)
    if progress is not None:
        progress(written)
    return written
