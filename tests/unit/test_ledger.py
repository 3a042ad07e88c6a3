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


@dataclasses.dataclass
class ClickHouseModel:
    """What the sink leaves in ClickHouse: ReplacingMergeTree rows, read with argMax."""

    archive: dict[str, tuple[int, SeenRecord]] = dataclasses.field(default_factory=dict)
    heartbeat_owners: dict[str, tuple[int, SeenRecord]] = dataclasses.field(default_factory=dict)
    counters: dict[tuple[PeriodKey, Combo], tuple[int, int]] = dataclasses.field(
        default_factory=dict
    )
    progress: dict[int, int] = dataclasses.field(default_factory=dict)

    def write_counters(self, dirty: dict[PeriodKey, PeriodCounts]) -> None:
        for key, value in dirty.items():
            for combo, n in value.counts.items():
                old = self.counters.get((key, combo))
                if old is not None and old[1] == value.version:
                    assert old[0] == n, "same version must mean same value"
                if old is None or value.version >= old[1]:
                    self.counters[(key, combo)] = (n, value.version)

    def rebuild(self, shard: int) -> LocalModel:
        """streams.state.LocalState.rebuild: progress, counters (argMax, max version), owners."""
        periods: dict[PeriodKey, tuple[dict[Combo, int], int]] = {}
        for (key, combo), (n, version) in self.counters.items():
            if key.shard == shard:
                counts, seen_version = periods.get(key, ({}, -1))
                counts[combo] = n
                periods[key] = (counts, max(seen_version, version))
        return LocalModel(
            owners={
                k: owner
                for k, (s, owner) in [*self.archive.items(), *self.heartbeat_owners.items()]
                if s == shard
            },
            counters={k: PeriodCounts(c, v) for k, (c, v) in periods.items()},
            position=self.progress.get(shard, 0),
        )


@dataclasses.dataclass
class LocalModel:
    """The worker's RocksDB for one partition."""

    owners: dict[str, SeenRecord]
    counters: dict[PeriodKey, PeriodCounts]
    position: int


@settings(max_examples=200, deadline=None)
@given(
    n_events=st.integers(1, 60),
    n_shards=st.integers(1, 3),
    resend_rate=st.floats(0, 0.6),
    crash_rate=st.floats(0, 0.5),
    loss_rate=st.floats(0, 0.3),
    batch=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_counts_each_event_once_whatever_crashes_and_state_losses(
    n_events: int,
    n_shards: int,
    resend_rate: float,
    crash_rate: float,
    loss_rate: float,
    batch: int,
    seed: int,
) -> None:
    """The counting stage's protocol (streams.counting): archive, counters, progress, then
    local state; a crash may stop it after any step, and the local state may be lost.
    On restart the local state is kept only if its position equals ClickHouse's progress,
    otherwise rebuilt from ClickHouse; replays then add nothing twice."""
    rng = random.Random(seed)
    events = {e.event_id: e for e in (make_event(i, rng) for i in range(n_events))}
    stream = list(events.values())
    stream += [rng.choice(stream) for _ in range(int(len(stream) * resend_rate))]
    rng.shuffle(stream)
    # Route like Kafka: every copy of an event_id lands in the same shard.
    shards: dict[int, list[ServiceEvent]] = {s: [] for s in range(n_shards)}
    for event in stream:
        shards[int(event.event_id[-4:]) % n_shards].append(event)
    ch = ClickHouseModel()
    for shard, log in shards.items():
        local: LocalModel | None = LocalModel({}, {}, 0)
        while ch.progress.get(shard, 0) < len(log):
            if local is None or local.position != ch.progress.get(shard, 0):
                local = ch.rebuild(shard)  # the restart check
            end = min(len(log), local.position + batch)
            records = [Record(shard, o, log[o]) for o in range(local.position, end)]
            seen = {
                r.event.event_id: local.owners[r.event.event_id]
                for r in records
                if r.event.event_id in local.owners
            }
            counters = dict(local.counters)
            outcome = apply_batch(records, seen, counters, ZONE)
            # The sink's order, then the local state; a crash may stop it after any step.
            done = 0
            while done < 4 and rng.random() >= crash_rate / 4:
                if done == 0:
                    ch.heartbeat_owners.update(
                        {
                            r.event.event_id: (shard, seen[r.event.event_id])
                            for r in outcome.heartbeats
                        }
                    )
                    ch.archive.update(
                        {r.event.event_id: (shard, seen[r.event.event_id]) for r in outcome.owned}
                    )
                elif done == 1:
                    ch.write_counters(outcome.dirty)
                elif done == 2:
                    ch.progress[shard] = end
                done += 1
            if done < 4:  # crashed: the local state is as it was, or lost
                local = None if rng.random() < loss_rate else local
                continue
            local = LocalModel(
                {
                    **local.owners,
                    **{r.event.event_id: seen[r.event.event_id] for r in outcome.first_seen},
                },
                counters,
                end,
            )
            if rng.random() < loss_rate:
                local = None  # the data folder is lost (a new host)

    rows: Counter[tuple[str, str, str, str, EventType]] = Counter()
    for (pk, (hall, dept, etype)), (n, _version) in ch.counters.items():
        rows[(pk.period_kind, pk.period, hall, dept, etype)] += n
    assert +rows == +oracle(events)
    counted = {k for k, e in events.items() if e.event_type is not EventType.HEARTBEAT}
    assert set(ch.archive) == counted


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
