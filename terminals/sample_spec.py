"""What the calibrated sample year is: its spec, the bulletin targets, the boundary events.

Why apart from the generator (:mod:`terminals.sample`): a spec is checked when it is
made, and that check needs the fixed boundary events, which the calibration
(:mod:`terminals.sample_plan`) places first. The event types come from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hallstats.errors import DataError
from schemas.catalog import COUNTED_TYPES, EventType
from schemas.figures import TypeCounts

__all__ = [
    "BULLETIN_WEEK",
    "BULLETIN_YTD",
    "DEFAULT_SPEC",
    "EVENT_TYPES",
    "POST",
    "PRE",
    "TYPE_INDEX",
    "WEEK",
    "Counts",
    "Fixed",
    "SampleSpec",
    "boundary_events",
    "fixed_counts",
    "period",
]

#: The counted types in catalog (bulletin) order: the order of every per-type list here.
EVENT_TYPES: Final = tuple(t.value for t in COUNTED_TYPES)
TYPE_INDEX: Final = {name: i for i, name in enumerate(EVENT_TYPES)}


class Counts(TypeCounts):
    """One figure per counted type (the contract's :class:`TypeCounts`); frozen so a
    spec stays hashable and shareable."""

    def values(self) -> tuple[int, ...]:
        """The figures in ``EVENT_TYPES`` order."""
        return tuple(self.get(t) for t in COUNTED_TYPES)


# Section 四(一) of the 2024-W50 bulletin (published 2024-12-25).
BULLETIN_WEEK: Final = Counts(consult=1627, accept=578, issue=3897, transfer=5464)
BULLETIN_YTD: Final = Counts(consult=78946, accept=32381, issue=156964, transfer=346703)


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
        minimum = fixed_counts(self)
        for i, name in enumerate(EVENT_TYPES):
            week, ytd = self.week_targets.values()[i], self.ytd_targets.values()[i]
            if week < minimum[WEEK][i] or ytd - week < minimum[PRE][i]:
                raise DataError(
                    f"targets[{name}]: expected week >= {minimum[WEEK][i]} and "
                    f"ytd - week >= {minimum[PRE][i]} (boundary events are fixed), "
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


#: The calibrated periods: before the week (year to date), the week, after it (no target).
PRE, WEEK, POST = 0, 1, 2


def period(spec: SampleSpec, day: date) -> int:
    if day < spec.week_start:
        return PRE
    return WEEK if day <= spec.week_end else POST


@dataclass(frozen=True)
class Fixed:
    """A deliberate boundary event: only its LOCAL date says where it counts."""

    local: datetime
    event_type: str
    utc_form: bool


def boundary_events(spec: SampleSpec) -> list[Fixed]:
    zone = ZoneInfo(spec.timezone)
    mon, sun = spec.week_start, spec.week_end
    last = date(spec.year, 12, 31)
    last_monday = last - timedelta(days=last.weekday())
    consult, accept = EventType.CONSULT.value, EventType.ACCEPT.value
    issue, transfer = EventType.ISSUE.value, EventType.TRANSFER.value

    def at(day: date, h: int, m: int, s: int = 0) -> datetime:
        return datetime(day.year, day.month, day.day, h, m, s, tzinfo=zone)

    events = [
        # UTC date is the previous day, local date is the week's Monday: in the week.
        Fixed(at(mon, 0, 0), accept, utc_form=True),
        Fixed(at(mon, 0, 30), consult, utc_form=True),
        Fixed(at(mon, 7, 30), issue, utc_form=False),
        # Last second before the week: before it, but in the year to date.
        Fixed(at(mon - timedelta(days=1), 23, 59, 59), issue, utc_form=True),
        # Overtime on Friday and the week's very last second: still in the week.
        Fixed(at(mon + timedelta(days=4), 18, 45), transfer, utc_form=True),
        Fixed(at(sun, 23, 59, 59), transfer, utc_form=False),
        # UTC date is the week's Sunday, local date the next Monday: outside both.
        Fixed(at(sun + timedelta(days=1), 0, 0), accept, utc_form=True),
        Fixed(at(sun + timedelta(days=1), 7, 30), consult, utc_form=True),
        # UTC year is the previous year, local date is Jan 1: in the year to date.
        Fixed(at(date(spec.year, 1, 1), 0, 30), consult, utc_form=True),
        # Last ISO week of the calendar year, seen from UTC and local side.
        Fixed(at(last_monday, 0, 30), transfer, utc_form=True),
        Fixed(at(last, 23, 59, 59), issue, utc_form=False),
    ]
    return [e for e in events if e.local.year == spec.year]


def fixed_counts(spec: SampleSpec) -> list[list[int]]:
    """Boundary events per period (``PRE``, ``WEEK``, ``POST``) and type."""
    counts = [[0] * len(EVENT_TYPES) for _ in (PRE, WEEK, POST)]
    for e in boundary_events(spec):
        counts[period(spec, e.local.date())][TYPE_INDEX[e.event_type]] += 1
    return counts


DEFAULT_SPEC: Final = SampleSpec()  # after the helpers: making a spec checks it with them
