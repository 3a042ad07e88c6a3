"""Exactly-once counting under re-sends, replays and partially persisted state."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.catalog import EventType
from schemas.events import ServiceEvent
from streams.ledger import (
    Combo,
    PeriodCounts,
    PeriodKey,
    Record,
    SeenRecord,
    apply_batch,
    period_keys,
)

ZONE = ZoneInfo("Asia/Shanghai")
BASE = datetime(2024, 12, 29, 0, 0, tzinfo=UTC)  # straddles a year and ISO-week boundary


def make_event(n: int, rng: random.Random) -> ServiceEvent:
    return ServiceEvent(
        event_id=f"00000000-0000-4000-8000-{n:012d}",
        event_type=rng.choice(list(EventType)),
        occurred_at=BASE + timedelta(hours=rng.randrange(0, 24 * 6)),
        hall_id=rng.choice(["h1", "h2"]),
        window_id="W1",
        department=rng.choice(["民政厅", "商务厅"]),
    )


def oracle(events: dict[str, ServiceEvent]) -> Counter[tuple[str, str, str, str, EventType]]:
    """Expected totals by (kind, period, hall, dept, type), independent of shards."""
    expected: Counter[tuple[str, str, str, str, EventType]] = Counter()
    for event in events.values():
        if event.event_type is EventType.HEARTBEAT:
            continue
        for key in period_keys(event, 0, ZONE):
            combo = (key.period_kind, key.period, event.hall_id, event.department, event.event_type)
            expected[combo] += 1
    return expected


def collapse(view: dict[PeriodKey, PeriodCounts]) -> Counter[tuple[str, str, str, str, EventType]]:
    got: Counter[tuple[str, str, str, str, EventType]] = Counter()
    for key, value in view.items():
        for (hall, dept, etype), n in value.counts.items():
            got[(key.period_kind, key.period, hall, dept, etype)] += n
    return +got


@settings(max_examples=150, deadline=None)
@given(
    n_events=st.integers(1, 60),
    n_shards=st.integers(1, 3),
    resend_rate=st.floats(0, 0.6),
    crash_rate=st.floats(0, 0.5),
    batch=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_counts_each_event_once_whatever_crashes(
    n_events: int, n_shards: int, resend_rate: float, crash_rate: float, batch: int, seed: int
) -> None:
    rng = random.Random(seed)
    events = {e.event_id: e for e in (make_event(i, rng) for i in range(n_events))}
    stream = list(events.values())
    stream += [rng.choice(stream) for _ in range(int(len(stream) * resend_rate))]
    rng.shuffle(stream)
    # Route like Kafka: every copy of an event_id lands in the same shard.
    shards: dict[int, list[ServiceEvent]] = {s: [] for s in range(n_shards)}
    for event in stream:
        shards[int(event.event_id[-4:]) % n_shards].append(event)

    durable_seen: dict[str, SeenRecord] = {}
    durable_counters: dict[PeriodKey, PeriodCounts] = {}
    # One row per (period, combo) with the period's version, as the sink writes them.
    clickhouse: dict[tuple[PeriodKey, Combo], tuple[int, int]] = {}
    for shard, log in shards.items():
        committed = position = 0
        seen, counters = dict(durable_seen), dict(durable_counters)
        unflushed_seen: dict[str, SeenRecord] = {}
        unflushed_counters: dict[PeriodKey, PeriodCounts] = {}
        while committed < len(log):
            end = min(len(log), position + batch)
            records = [Record(shard, o, log[o]) for o in range(position, end)]
            before_seen, before_counters = dict(seen), dict(counters)
            outcome = apply_batch(records, seen, counters, ZONE)
            unflushed_seen.update({k: v for k, v in seen.items() if before_seen.get(k) != v})
            unflushed_counters.update(
                {k: v for k, v in counters.items() if before_counters.get(k) != v}
            )
            for pk, pc in outcome.dirty.items():  # ReplacingMergeTree(version) semantics
                for combo, n in pc.counts.items():
                    old = clickhouse.get((pk, combo))
                    if old is not None and old[1] == pc.version:
                        assert old[0] == n, "same version must mean same value"
                    if old is None or pc.version >= old[1]:
                        clickhouse[(pk, combo)] = (n, pc.version)
            position = end
            roll = rng.random()
            if roll < crash_rate:
                # Crash: each pending changelog record landed or not, independently;
                # the worker restarts from the durable state and the last commit.
                for k, v in unflushed_seen.items():
                    if rng.random() < 0.5:
                        durable_seen[k] = v
                for ck, cv in unflushed_counters.items():
                    if rng.random() < 0.5:
                        durable_counters[ck] = cv
                seen, counters = dict(durable_seen), dict(durable_counters)
                unflushed_seen, unflushed_counters = {}, {}
                position = committed
            elif roll < crash_rate + (1 - crash_rate) / 2 or position == len(log):
                # Commit: Faust flushes the producer (changelogs) first.
                durable_seen.update(unflushed_seen)
                durable_counters.update(unflushed_counters)
                unflushed_seen, unflushed_counters = {}, {}
                committed = position

    rows: Counter[tuple[str, str, str, str, EventType]] = Counter()
    for (pk, (hall, dept, etype)), (n, _version) in clickhouse.items():
        rows[(pk.period_kind, pk.period, hall, dept, etype)] += n
    assert +rows == +oracle(events)
    assert collapse(durable_counters) == +oracle(events)


def test_conflicting_duplicate_is_reported_and_not_counted() -> None:
    rng = random.Random(1)
    first = make_event(1, rng)
    changed = dataclasses.replace(first, window_id="W9")
    seen: dict[str, SeenRecord] = {}
    counters: dict[PeriodKey, PeriodCounts] = {}
    outcome = apply_batch(
        [Record(0, 0, first), Record(0, 1, changed), Record(0, 2, first)], seen, counters, ZONE
    )
    assert [r.position for r, _ in outcome.conflicts] == [1]
    assert [r.position for r in outcome.duplicates] == [2]
    if first.event_type is not EventType.HEARTBEAT:
        assert sum(n for v in counters.values() for n in v.counts.values()) == 3  # day/week/year


def test_heartbeats_are_never_counted() -> None:
    rng = random.Random(2)
    beat = dataclasses.replace(make_event(5, rng), event_type=EventType.HEARTBEAT)
    counters: dict[PeriodKey, PeriodCounts] = {}
    outcome = apply_batch([Record(0, 0, beat)], {}, counters, ZONE)
    assert outcome.heartbeats and not counters and not outcome.dirty
