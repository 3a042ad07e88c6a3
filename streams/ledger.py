"""Exactly-once counting as pure logic over two key-value maps.

Delivery is at-least-once (a crash replays everything after the last
commit, a terminal may re-send). Exactness comes from two facts kept in the
state itself:

* ``seen[event_id] = (fingerprint, position)`` remembers *which record* of the
  by-event-id partition owns an event. Any other record with that id is a
  re-send (same fingerprint) or a conflict (different fingerprint).
* ``counters[period] = (counts, version)`` where ``version`` is the position
  of the last record applied to that period. Positions grow within a partition
  (see :mod:`streams.bundles`) and every period key carries its partition
  (``shard``), so a replayed record with ``position <= version`` is already
  inside ``counts``.

Each period is one changelog record and so updated atomically; no ordering
between the two maps is needed. Replayed records still mark their counters
dirty so that the ClickHouse rows (absolute values) are re-written.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from schemas.calendar import Periods
from schemas.catalog import EventType, is_counted
from schemas.events import ServiceEvent

Combo = tuple[str, str, EventType]  # hall_id, department, event_type


@dataclass(frozen=True, order=True)
class PeriodKey:
    """One shard's counters of one period: the unit of atomic state.

    All (hall, department, type) counts of a period live in one table entry,
    so a batch writes one changelog record per touched period instead of one
    per touched counter, and the entry's single version covers all of them.
    """

    shard: int
    period_kind: str  # 'day' | 'week' | 'year'
    period: str  # '2024-12-09' | '2024-W50' | '2024'
    period_start: date
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Looked up three times per event: hash once, not per lookup.
        object.__setattr__(
            self, "_hash", hash((self.shard, self.period_kind, self.period, self.period_start))
        )

    def __hash__(self) -> int:
        return self._hash

    def encode(self) -> str:
        """Stable string form, used as the Faust table key."""
        return f"{self.shard}|{self.period_kind}|{self.period}|{self.period_start.isoformat()}"

    @classmethod
    def decode(cls, text: str) -> PeriodKey:
        shard, kind, period, start = text.split("|")
        return cls(int(shard), kind, period, date.fromisoformat(start))


@dataclass(frozen=True)
class PeriodCounts:
    """Counts per combo of one period and the position of the last event applied."""

    counts: Mapping[Combo, int]
    version: int  # -1 = nothing applied yet

    def to_json(self) -> list[Any]:
        return [self.version, [[h, d, t.value, n] for (h, d, t), n in self.counts.items()]]

    @classmethod
    def from_json(cls, data: list[Any]) -> PeriodCounts:
        version, rows = data
        return cls(
            MappingProxyType({(h, d, EventType(t)): int(n) for h, d, t, n in rows}), int(version)
        )


EMPTY = PeriodCounts(MappingProxyType({}), -1)


class SeenRecord(NamedTuple):
    """Who owns an event_id: its content hash and the position that first carried it."""

    fingerprint: str
    position: int


class Record(NamedTuple):
    """One event of the by-event-id topic, as the counting stage sees it."""

    shard: int
    position: int
    event: ServiceEvent


def period_keys(event: ServiceEvent, shard: int, zone: ZoneInfo) -> tuple[PeriodKey, ...]:
    return _keys_of_day(shard, event.local_date(zone))


@functools.lru_cache(maxsize=4096)
def _keys_of_day(shard: int, day: date) -> tuple[PeriodKey, ...]:
    """The day's, ISO week's and year's keys; cached, since a batch shares a few days."""
    periods = Periods.of_day(day)
    return (
        PeriodKey(shard, "day", periods.day.isoformat(), periods.day),
        PeriodKey(shard, "week", str(periods.week), periods.week.start),
        PeriodKey(shard, "year", f"{periods.year:04d}", date(periods.year, 1, 1)),
    )


@dataclass
class BatchOutcome:
    """What one batch did; ``dirty`` holds the absolute values to (re)write."""

    owned: list[Record] = field(default_factory=list)  # archive rows to (re)write
    first_seen: list[Record] = field(default_factory=list)  # new seen entries to persist
    newly_counted: list[Record] = field(default_factory=list)
    duplicates: list[Record] = field(default_factory=list)
    conflicts: list[tuple[Record, SeenRecord]] = field(default_factory=list)
    heartbeats: list[Record] = field(default_factory=list)
    dirty: dict[PeriodKey, PeriodCounts] = field(default_factory=dict)


def apply_batch(
    records: Sequence[Record],
    seen: MutableMapping[str, SeenRecord],
    counters: MutableMapping[PeriodKey, PeriodCounts],
    zone: ZoneInfo,
) -> BatchOutcome:
    """Apply records in position order per shard; write each touched period once."""
    out = BatchOutcome()
    # key -> [counts, version]; the hot loop of counting (every event of every batch),
    # so names are bound locally and the keys come from the per-day cache.
    working: dict[PeriodKey, list[Any]] = {}
    seen_get, working_get, keys_of_day = seen.get, working.get, _keys_of_day
    for record in records:
        shard, position, event = record
        event_id = event.event_id
        previous = seen_get(event_id)
        if previous is not None and previous.position != position:
            if previous.fingerprint == event.fingerprint():
                out.duplicates.append(record)
            else:
                out.conflicts.append((record, previous))
            continue
        if previous is None:
            seen[event_id] = SeenRecord(event.fingerprint(), position)
            out.first_seen.append(record)
        event_type = event.event_type
        if not is_counted(event_type):
            out.heartbeats.append(record)
            continue
        out.owned.append(record)
        combo: Combo = (event.hall_id, event.department, event_type)
        applied_now = False
        for key in keys_of_day(shard, event.local_date(zone)):
            entry = working_get(key)
            if entry is None:
                stored = counters.get(key) or EMPTY
                entry = working[key] = [dict(stored.counts), stored.version]
            if entry[1] < position:
                counts = entry[0]
                counts[combo] = counts.get(combo, 0) + 1
                entry[1] = position
                applied_now = True
        if applied_now:
            out.newly_counted.append(record)
    for key, (counts, version) in working.items():
        value = PeriodCounts(MappingProxyType(counts), version)
        out.dirty[key] = value  # replayed periods too: their ClickHouse rows are re-written
        if counters.get(key) != value:
            counters[key] = value
    return out
