"""Exactly-once counting as pure logic over two key-value maps.

Delivery is at-least-once (a crash replays everything after the last
commit, a terminal may re-send). Exactness comes from two facts kept in the
state itself:

* ``seen[event_id] = (fingerprint, position)`` remembers *which record* of the
  by-event-id partition owns an event. Any other record with that id is a
  re-send (same fingerprint) or a conflict (different fingerprint).
* ``counters[key] = (value, version)`` where ``version`` is the position of the
  last record applied to it. Positions grow within a partition (see
  :mod:`streams.bundles`) and every counter key carries its partition
  (``shard``), so a replayed record with ``position <= version`` is already
  inside ``value``.

Each counter is one changelog record and so updated atomically; no ordering
between the two maps is needed. Replayed records still mark their counters
dirty so that the ClickHouse rows (absolute values) are re-written.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo

from schemas.calendar import Periods
from schemas.catalog import EventType, is_counted
from schemas.events import ServiceEvent


@dataclass(frozen=True, order=True)
class CounterKey:
    """One counter: a shard's count of one type, hall and department in one period."""

    shard: int
    period_kind: str  # 'day' | 'week' | 'year'
    period: str  # '2024-12-09' | '2024-W50' | '2024'
    period_start: date
    hall_id: str
    department: str
    event_type: EventType

    def encode(self) -> str:
        """Stable string form, used as the Faust table key."""
        return json.dumps(
            [
                self.shard,
                self.period_kind,
                self.period,
                self.period_start.isoformat(),
                self.hall_id,
                self.department,
                self.event_type.value,
            ],
            ensure_ascii=False,
        )

    @classmethod
    def decode(cls, text: str) -> CounterKey:
        shard, kind, period, start, hall, dept, etype = json.loads(text)
        return cls(
            int(shard), kind, period, date.fromisoformat(start), hall, dept, EventType(etype)
        )


@dataclass(frozen=True)
class CounterValue:
    value: int
    version: int  # position of the last applied record; -1 = none


@dataclass(frozen=True)
class SeenRecord:
    fingerprint: str
    position: int


@dataclass(frozen=True)
class Record:
    """One event of the by-event-id topic, as the counting stage sees it."""

    shard: int
    position: int
    event: ServiceEvent


def counter_keys(event: ServiceEvent, shard: int, zone: ZoneInfo) -> list[CounterKey]:
    periods = Periods.of(event.occurred_at, zone)
    common = (event.hall_id, event.department, event.event_type)
    return [
        CounterKey(shard, "day", periods.day.isoformat(), periods.day, *common),
        CounterKey(shard, "week", str(periods.week), periods.week.start, *common),
        CounterKey(shard, "year", f"{periods.year:04d}", date(periods.year, 1, 1), *common),
    ]


@dataclass
class BatchOutcome:
    """What one batch did; ``dirty`` holds the absolute values to (re)write."""

    owned: list[Record] = field(default_factory=list)  # archive rows to (re)write
    first_seen: list[Record] = field(default_factory=list)  # new seen entries to persist
    newly_counted: list[Record] = field(default_factory=list)
    duplicates: list[Record] = field(default_factory=list)
    conflicts: list[tuple[Record, SeenRecord]] = field(default_factory=list)
    heartbeats: list[Record] = field(default_factory=list)
    dirty: dict[CounterKey, CounterValue] = field(default_factory=dict)


def apply_batch(
    records: Sequence[Record],
    seen: MutableMapping[str, SeenRecord],
    counters: MutableMapping[CounterKey, CounterValue],
    zone: ZoneInfo,
) -> BatchOutcome:
    """Apply records in position order per shard; write each touched counter once."""
    out = BatchOutcome()
    for record in records:
        event = record.event
        previous = seen.get(event.event_id)
        if previous is not None and previous.position != record.position:
            if previous.fingerprint == event.fingerprint():
                out.duplicates.append(record)
            else:
                out.conflicts.append((record, previous))
            continue
        if previous is None:
            seen[event.event_id] = SeenRecord(event.fingerprint(), record.position)
            out.first_seen.append(record)
        if not is_counted(event.event_type):
            out.heartbeats.append(record)
            continue
        out.owned.append(record)
        applied_now = False
        for key in counter_keys(event, record.shard, zone):
            current = out.dirty.get(key) or counters.get(key) or CounterValue(0, -1)
            if current.version < record.position:
                current = CounterValue(current.value + 1, record.position)
                applied_now = True
            out.dirty[key] = current
        if applied_now:
            out.newly_counted.append(record)
    for key, value in out.dirty.items():
        if counters.get(key) != value:
            counters[key] = value
    return out
