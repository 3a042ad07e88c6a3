"""The calibration of the sample year: how many regular events each local day gets.

Each working day gets a weight (weekday pattern x month season x slow random drift x
post-holiday surge x per-type jitter). After the fixed boundary events
(:mod:`terminals.sample_spec`), the remaining target of each type in each calibrated
period (before the week, the week itself) is split over that period's working days
by largest-remainder apportionment, which is exact by construction. Days after the
week get the same volume law without a target. Working days are the official
calendar's (:mod:`schemas.workdays`, as in the bulletin header), weekdays only.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from typing import Final

from schemas.workdays import workday
from terminals.apportion import apportion
from terminals.sample_spec import (
    DEFAULT_SPEC,
    EVENT_TYPES,
    PRE,
    WEEK,
    SampleSpec,
    fixed_counts,
    period,
)

__all__ = ["expected_counts", "plan"]

_WEEKDAY_FACTOR: Final = (1.14, 1.05, 1.0, 0.97, 0.86)
_MONTH_FACTOR: Final = (1.02, 0.86, 1.10, 1.03, 0.98, 1.05, 0.95, 0.93, 1.00, 0.94, 1.04, 1.12)


def _open(day: date) -> bool:
    """Halls open on official working days; make-up working weekends are left out on
    purpose (the sample keeps to Monday..Friday)."""
    return day.weekday() < 5 and workday(day)


def _day_weights(spec: SampleSpec, rng: random.Random) -> dict[date, tuple[float, ...]]:
    """Relative volume per working day and type: seasonal, weekly, drifting, jittered."""
    weights: dict[date, tuple[float, ...]] = {}
    drift = 0.0
    last_open: date | None = None
    day = date(spec.year, 1, 1)
    while day.year == spec.year:
        drift = 0.7 * drift + rng.gauss(0.0, 0.05)  # drawn every day: stable stream
        if _open(day):
            base = _WEEKDAY_FACTOR[day.weekday()] * _MONTH_FACTOR[day.month - 1]
            base *= math.exp(drift)
            if last_open is not None and (day - last_open).days > 3:
                base *= 1.3  # the backlog after a holiday
            weights[day] = tuple(base * math.exp(rng.gauss(0.0, 0.08)) for _ in EVENT_TYPES)
            last_open = day
        day += timedelta(days=1)
    return weights


def plan(spec: SampleSpec) -> dict[date, list[int]]:
    """Regular (non-boundary) events per local date and type; exact where calibrated."""
    rng = random.Random(f"{spec.seed}:plan")
    weights = _day_weights(spec, rng)
    fixed = fixed_counts(spec)
    days = [spec.week_start - timedelta(days=n) for n in range(1, 367)]
    pre_days = sorted(d for d in days if d.year == spec.year)
    week_days = [spec.week_start + timedelta(days=n) for n in range(7)]
    targets = {
        PRE: [
            y - w
            for y, w in zip(spec.ytd_targets.values(), spec.week_targets.values(), strict=True)
        ],
        WEEK: list(spec.week_targets.values()),
    }
    out: dict[date, list[int]] = {}
    for p, period_days in ((PRE, pre_days), (WEEK, week_days)):
        # A week without working days (Spring Festival) is served by duty desks on weekdays.
        open_days = (
            [d for d in period_days if d in weights]
            or [d for d in period_days if d.weekday() < 5]
            or period_days
        )
        for ti in range(len(EVENT_TYPES)):
            remaining = targets[p][ti] - fixed[p][ti]
            if not open_days:
                continue  # validated: nothing left to place
            ws = [weights[d][ti] if d in weights else 1.0 for d in open_days]
            for d, n in zip(open_days, apportion(remaining, ws), strict=True):
                out.setdefault(d, [0] * len(EVENT_TYPES))[ti] += n
    # After the week: same daily law, scaled to the calibrated week's volume, no target.
    mean = [sum(w[ti] for w in weights.values()) / len(weights) for ti in range(len(EVENT_TYPES))]
    for d, w in weights.items():
        if d > spec.week_end:
            out[d] = [
                round(spec.week_targets.values()[ti] / 5 / mean[ti] * w[ti])
                for ti in range(len(EVENT_TYPES))
            ]
    return out


def expected_counts(spec: SampleSpec = DEFAULT_SPEC) -> dict[str, dict[str, int]]:
    """True figures of the calibrated week and year to date: distinct valid events by type.

    ``{"week": {type: n}, "ytd": {type: n}}`` for ``spec.week_start .. spec.week_end``
    and ``Jan 1 .. spec.week_end`` (local dates). Recomputed from the plan rather than
    echoed from the spec, so a broken calibration fails here, not in a pipeline test.
    """
    regular = plan(spec)
    fixed = fixed_counts(spec)
    week, pre = list(fixed[WEEK]), list(fixed[PRE])
    for d, counts in regular.items():
        p = period(spec, d)
        for ti, n in enumerate(counts):
            if p == WEEK:
                week[ti] += n
            elif p == PRE:
                pre[ti] += n
    ytd = [w + p for w, p in zip(week, pre, strict=True)]
    if tuple(week) != spec.week_targets.values() or tuple(ytd) != spec.ytd_targets.values():
        raise AssertionError(f"calibration drifted: week={week}, ytd={ytd}, spec={spec}")
    return {
        "week": dict(zip(EVENT_TYPES, week, strict=True)),
        "ytd": dict(zip(EVENT_TYPES, ytd, strict=True)),
    }
