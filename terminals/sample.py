"""A deterministic, realistic year of window-terminal events with known true figures.

Why: the pipeline must reproduce the bulletin's figures to the unit, so tests and the
end-to-end replay need input whose exact counts are known in advance. The sample is
calibrated so that ISO week ``spec.week`` (local calendar, ``spec.timezone``) and the
year to date (local Jan 1 .. that week's Sunday) hold exactly the target counts of
distinct valid events per type; everything else (the rest of the year, re-sends,
invalid lines) is noise a correct pipeline must place or drop without changing them.

Calibration: each working day gets a weight (weekday pattern x month season x slow
random drift x post-holiday surge x per-type jitter). A handful of fixed boundary
events is placed first; the remaining target of each type in each calibrated period
(before the week, the week itself) is then split over that period's working days by
largest-remainder apportionment, which is exact by construction. Days after the week
get the same volume law without a target. Three independent seeded ``random.Random``
streams (plan, events, noise) keep the valid events identical whatever the re-send
and invalid-line knobs are set to.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hallstats.errors import DataError

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

EVENT_TYPES: Final = ("consult", "accept", "issue", "transfer")
_TYPE_INDEX: Final = {name: i for i, name in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class Counts:
    """One figure per event type; frozen so a spec stays hashable and shareable."""

    consult: int = 0
    accept: int = 0
    issue: int = 0
    transfer: int = 0

    def values(self) -> tuple[int, int, int, int]:
        """The figures in ``EVENT_TYPES`` order."""
        return (self.consult, self.accept, self.issue, self.transfer)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(EVENT_TYPES, self.values(), strict=True))


# Section 四(一) of the 2024-W50 bulletin (published 2024-12-25).
BULLETIN_WEEK: Final = Counts(consult=1627, accept=578, issue=3897, transfer=5464)
BULLETIN_YTD: Final = Counts(consult=78946, accept=32381, issue=156964, transfer=346703)

# Weekday public holidays (State Council notice for 2024): halls are closed, no events.
# Make-up working weekends are left out on purpose: the sample keeps to Mon-Fri.
_HOLIDAYS: Final[dict[int, frozenset[date]]] = {
    2024: frozenset(
        [date(2024, 1, 1)]
        + [date(2024, 2, d) for d in range(12, 17)]
        + [date(2024, 4, 4), date(2024, 4, 5)]
        + [date(2024, 5, d) for d in (1, 2, 3)]
        + [date(2024, 6, 10)]
        + [date(2024, 9, 16), date(2024, 9, 17)]
        + [date(2024, 10, d) for d in (1, 2, 3, 4, 7)]
    ),
}

_WEEKDAY_FACTOR: Final = (1.14, 1.05, 1.0, 0.97, 0.86)
_MONTH_FACTOR: Final = (1.02, 0.86, 1.10, 1.03, 0.98, 1.05, 0.95, 0.93, 1.00, 0.94, 1.04, 1.12)

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


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. Defaults reproduce the 2024-W50 bulletin figures.

    Immutable so one spec can name one sample: same spec, same lines, byte for byte.
    """

    year: int = 2024
    seed: int = 20241225
    resend_rate: float = 0.002  # share of valid events emitted a second time, later
    invalid_count: int = 20  # lines a validator must reject
    week: int = 50  # ISO week of `year` whose weekly figures are calibrated
    week_targets: Counts = BULLETIN_WEEK
    ytd_targets: Counts = BULLETIN_YTD  # local Jan 1 .. the week's Sunday, inclusive
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if not 0.0 <= self.resend_rate < 1.0:
            raise DataError(f"resend_rate: expected 0 <= rate < 1, got {self.resend_rate!r}")
        if self.invalid_count < 0:
            raise DataError(f"invalid_count: expected >= 0, got {self.invalid_count!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise DataError(f"timezone: expected an IANA zone, got {self.timezone!r}") from exc
        try:
            start = date.fromisocalendar(self.year, self.week, 1)
        except ValueError as exc:
            raise DataError(f"week: no ISO week {self.week} in {self.year}") from exc
        if start.year != self.year or (start + timedelta(days=6)).year != self.year:
            raise DataError(
                f"week: expected an ISO week lying inside {self.year}, "
                f"got {self.year}-W{self.week:02d} ({start} .. {start + timedelta(days=6)})"
            )
        minimum = _fixed_counts(self)
        for i, name in enumerate(EVENT_TYPES):
            week, ytd = self.week_targets.values()[i], self.ytd_targets.values()[i]
            if week < minimum[_WEEK][i] or ytd - week < minimum[_PRE][i]:
                raise DataError(
                    f"targets[{name}]: expected week >= {minimum[_WEEK][i]} and "
                    f"ytd - week >= {minimum[_PRE][i]} (boundary events are fixed), "
                    f"got week={week}, ytd={ytd}"
                )
            if ytd > week and start == date(self.year, 1, 1):
                raise DataError(
                    f"targets[{name}]: week {self.week} starts on Jan 1, so ytd must equal "
                    f"week, got week={week}, ytd={ytd}"
                )

    @property
    def week_start(self) -> date:
        """Monday of the calibrated week (local date)."""
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def week_end(self) -> date:
        """Sunday of the calibrated week, also the last day of the year to date."""
        return self.week_start + timedelta(days=6)


_PRE, _WEEK, _POST = 0, 1, 2


def _period(spec: SampleSpec, day: date) -> int:
    if day < spec.week_start:
        return _PRE
    return _WEEK if day <= spec.week_end else _POST


@dataclass(frozen=True)
class _Fixed:
    """A deliberate boundary event: only its LOCAL date says where it counts."""

    local: datetime
    event_type: str
    utc_form: bool


def _boundary_events(spec: SampleSpec) -> list[_Fixed]:
    zone = ZoneInfo(spec.timezone)
    mon, sun = spec.week_start, spec.week_end
    last = date(spec.year, 12, 31)
    last_monday = last - timedelta(days=last.weekday())

    def at(day: date, h: int, m: int, s: int = 0) -> datetime:
        return datetime(day.year, day.month, day.day, h, m, s, tzinfo=zone)

    events = [
        # UTC date is the previous day, local date is the week's Monday: in the week.
        _Fixed(at(mon, 0, 0), "accept", utc_form=True),
        _Fixed(at(mon, 0, 30), "consult", utc_form=True),
        _Fixed(at(mon, 7, 30), "issue", utc_form=False),
        # Last second before the week: before it, but in the year to date.
        _Fixed(at(mon - timedelta(days=1), 23, 59, 59), "issue", utc_form=True),
        # Overtime on Friday and the week's very last second: still in the week.
        _Fixed(at(mon + timedelta(days=4), 18, 45), "transfer", utc_form=True),
        _Fixed(at(sun, 23, 59, 59), "transfer", utc_form=False),
        # UTC date is the week's Sunday, local date the next Monday: outside both.
        _Fixed(at(sun + timedelta(days=1), 0, 0), "accept", utc_form=True),
        _Fixed(at(sun + timedelta(days=1), 7, 30), "consult", utc_form=True),
        # UTC year is the previous year, local date is Jan 1: in the year to date.
        _Fixed(at(date(spec.year, 1, 1), 0, 30), "consult", utc_form=True),
        # Last ISO week of the calendar year, seen from UTC and local side.
        _Fixed(at(last_monday, 0, 30), "transfer", utc_form=True),
        _Fixed(at(last, 23, 59, 59), "issue", utc_form=False),
    ]
    return [e for e in events if e.local.year == spec.year]


def _fixed_counts(spec: SampleSpec) -> list[list[int]]:
    counts = [[0] * len(EVENT_TYPES) for _ in (_PRE, _WEEK, _POST)]
    for e in _boundary_events(spec):
        counts[_period(spec, e.local.date())][_TYPE_INDEX[e.event_type]] += 1
    return counts


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights``, exactly (largest remainder)."""
    s = sum(weights)
    quotas = [total * w / s for w in weights] if s > 0 else [total / len(weights)] * len(weights)
    counts = [int(q) for q in quotas]
    short = total - sum(counts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


def _day_weights(spec: SampleSpec, rng: random.Random) -> dict[date, tuple[float, ...]]:
    """Relative volume per working day and type: seasonal, weekly, drifting, jittered."""
    holidays = _HOLIDAYS.get(spec.year, frozenset())
    weights: dict[date, tuple[float, ...]] = {}
    drift = 0.0
    last_open: date | None = None
    day = date(spec.year, 1, 1)
    while day.year == spec.year:
        drift = 0.7 * drift + rng.gauss(0.0, 0.05)  # drawn every day: stable stream
        if day.weekday() < 5 and day not in holidays:
            base = _WEEKDAY_FACTOR[day.weekday()] * _MONTH_FACTOR[day.month - 1]
            base *= math.exp(drift)
            if last_open is not None and (day - last_open).days > 3:
                base *= 1.3  # the backlog after a holiday
            weights[day] = tuple(base * math.exp(rng.gauss(0.0, 0.08)) for _ in EVENT_TYPES)
            last_open = day
        day += timedelta(days=1)
    return weights


def _plan(spec: SampleSpec) -> dict[date, list[int]]:
    """Regular (non-boundary) events per local date and type; exact where calibrated."""
    rng = random.Random(f"{spec.seed}:plan")
    weights = _day_weights(spec, rng)
    fixed = _fixed_counts(spec)
    days = [spec.week_start - timedelta(days=n) for n in range(1, 367)]
    pre_days = sorted(d for d in days if d.year == spec.year)
    week_days = [spec.week_start + timedelta(days=n) for n in range(7)]
    targets = {
        _PRE: [
            y - w
            for y, w in zip(spec.ytd_targets.values(), spec.week_targets.values(), strict=True)
        ],
        _WEEK: list(spec.week_targets.values()),
    }
    plan: dict[date, list[int]] = {}
    for period, period_days in ((_PRE, pre_days), (_WEEK, week_days)):
        # A week without working days (Spring Festival) is served by duty desks on weekdays.
        open_days = (
            [d for d in period_days if d in weights]
            or [d for d in period_days if d.weekday() < 5]
            or period_days
        )
        for ti in range(len(EVENT_TYPES)):
            remaining = targets[period][ti] - fixed[period][ti]
            if not open_days:
                continue  # validated: nothing left to place
            ws = [weights[d][ti] if d in weights else 1.0 for d in open_days]
            for d, n in zip(open_days, _apportion(remaining, ws), strict=True):
                plan.setdefault(d, [0] * len(EVENT_TYPES))[ti] += n
    # After the week: same daily law, scaled to the calibrated week's volume, no target.
    mean = [sum(w[ti] for w in weights.values()) / len(weights) for ti in range(len(EVENT_TYPES))]
    for d, w in weights.items():
        if d > spec.week_end:
            plan[d] = [
                round(spec.week_targets.values()[ti] / 5 / mean[ti] * w[ti])
                for ti in range(len(EVENT_TYPES))
            ]
    return plan


DEFAULT_SPEC: Final = SampleSpec()


def expected_counts(spec: SampleSpec = DEFAULT_SPEC) -> dict[str, dict[str, int]]:
    """True figures of the calibrated week and year to date: distinct valid events by type.

    ``{"week": {type: n}, "ytd": {type: n}}`` for ``spec.week_start .. spec.week_end``
    and ``Jan 1 .. spec.week_end`` (local dates). Recomputed from the plan rather than
    echoed from the spec, so a broken calibration fails here, not in a pipeline test.
    """
    plan = _plan(spec)
    fixed = _fixed_counts(spec)
    week, pre = list(fixed[_WEEK]), list(fixed[_PRE])
    for d, counts in plan.items():
        p = _period(spec, d)
        for ti, n in enumerate(counts):
            if p == _WEEK:
                week[ti] += n
            elif p == _PRE:
                pre[ti] += n
    ytd = [w + p for w, p in zip(week, pre, strict=True)]
    if tuple(week) != spec.week_targets.values() or tuple(ytd) != spec.ytd_targets.values():
        raise AssertionError(f"calibration drifted: week={week}, ytd={ytd}, spec={spec}")
    return {
        "week": dict(zip(EVENT_TYPES, week, strict=True)),
        "ytd": dict(zip(EVENT_TYPES, ytd, strict=True)),
    }


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
    plan: dict[date, list[int]],
    fixed_by_day: dict[date, list[_Fixed]],
    rng: random.Random,
) -> list[int]:
    """Valid-event indexes before which an invalid line goes; a quarter inside the week.

    The calibrated week is where a pipeline that counts invalid lines would be caught.
    """
    per_day = {d: sum(c) for d, c in plan.items()}
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
    plan = _plan(spec)
    fixed_by_day: dict[date, list[_Fixed]] = {}
    for f in _boundary_events(spec):
        fixed_by_day.setdefault(f.local.date(), []).append(f)
    desks, cum = _desks()
    total_weight = cum[-1]
    millis = [d.hall.millis for d in desks]

    ev = random.Random(f"{spec.seed}:events")  # everything about valid events
    rnd = ev.random
    noise = random.Random(f"{spec.seed}:noise")  # re-sends and invalid lines only
    invalid_at = _invalid_positions(spec, plan, fixed_by_day, noise)
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
        regular = plan.get(day, ())
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
            items.append((ms, _TYPE_INDEX[f.event_type], k, di))
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
            if ti == 1:  # accept opens a case
                case_seq += 1
                case = f"ZW{spec.year}{case_seq:08d}"
                if len(cases) < case_cap:
                    cases.append(case)
                else:
                    cases[case_seq % case_cap] = case
            elif ti > 1:  # issue and transfer act on a recent case
                case = cases[int(rnd() * len(cases))]
            item_part = ""
            if rnd() < (0.5 if ti == 0 else 0.92):
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
