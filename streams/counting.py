"""Counting stage: bundles of the by-event-id topic in, exact counters in ClickHouse out.

Plain synchronous code, so the Faust agent (:mod:`streams.app`) only delivers
bundles and acknowledges them, and tests can drive it without Faust. A batch:

1. keeps, per partition, only offsets at or after the partition's position
   (a replay after a crash or rebalance is skipped) and reads any offset the
   delivery skipped straight from Kafka (:mod:`streams.gaps`), so every offset
   is applied once, in order, whatever the framework delivered;
2. dedups and counts (:func:`streams.ledger.apply_batch`) against the local
   state (:mod:`streams.state`);
3. makes every effect durable in this order: dead letters (Kafka), the events
   archive and counters, then ``progress`` (ClickHouse), then the local state.

A crash anywhere replays from the last local (or ClickHouse) position, and the
ledger's positions make the replay add nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from hallstats.clickhouse import connect
from hallstats.errors import OperationalError
from hallstats.kafka import consumer_config, producer_config
from hallstats.settings import Settings
from schemas.ddl import ensure_schema
from schemas.dlq import SourcePosition, dead_letter
from schemas.rejections import EventRejected, RejectReason
from streams import bundles
from streams.gaps import Fetched, fetch, missing
from streams.lateness import FinalizedWeeks
from streams.ledger import BatchOutcome, Record, apply_batch
from streams.sink import ClickHouseSink, SinkObserver
from streams.stage_stats import StageTallies
from streams.state import LocalState, Overlay

log = logging.getLogger(__name__)

#: Bundles read directly per partition and catch-up tick.
MAX_FILL = 256


class CountObserver(SinkObserver, Protocol):
    """Told about every counted batch, after it is durable (metrics)."""

    def counted(
        self,
        outcome: BatchOutcome,
        raw_timestamps: dict[tuple[int, int], float],
        late: list[tuple[Record, str, int]],
    ) -> None:
        """``raw_timestamps``: (partition, offset) of a bundle -> oldest raw Kafka time (s);
        ``late``: (record, week, its finalized version) of events counted after finalize."""


@dataclass(frozen=True)
class CountResult:
    bundles: int
    events: int
    newly_counted: int
    duplicates: int
    conflicts: int


class Counting:
    """The counting stage of one process, over the partitions assigned to it."""

    def __init__(
        self,
        settings: Settings,
        *,
        observer: CountObserver | None = None,
        tallies: StageTallies | None = None,
        finalized: FinalizedWeeks | None = None,
        slot: tuple[int, int] = (0, 1),
    ) -> None:
        """``slot``: (this process, of how many) counting in one worker (streams.state)."""
        self._settings = settings
        self._slot = slot
        self._observer = observer
        self.tallies = tallies or StageTallies("count")
        self._finalized = finalized or FinalizedWeeks(settings)
        self._lock = threading.Lock()  # one batch at a time
        self._meta = threading.Lock()  # assignment, positions: never held for long
        self._pending: set[int] = set()
        self._positions: dict[int, int] = {}
        self._last_input: dict[int, float] = {}
        self._state: LocalState | None = None
        self._sink: ClickHouseSink | None = None
        self._producer: Producer | None = None
        self._reader: Consumer | None = None
        self._dlq_failures: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------

    def _open(self) -> tuple[LocalState, ClickHouseSink]:
        if self._sink is None:
            self._sink = ClickHouseSink(self._settings, observer=self._observer)
            self._sink.ensure_schema()
        if self._state is None:
            self._state = LocalState(self._settings, self._slot)
        return self._state, self._sink

    def assign(self, partitions: Iterable[int]) -> None:
        """Note newly assigned partitions; the next batch adopts them.

        Adopting checks the local state against ClickHouse and may rebuild it, which
        takes minutes with years of history: done in a rebalance callback, the group
        would expel the member. So callbacks only record, and never wait for a batch.
        """
        with self._meta:
            self._pending |= set(partitions) - set(self._positions)

    def revoke(self, partitions: Iterable[int]) -> None:
        with self._meta:
            for partition in partitions:
                self._positions.pop(partition, None)
                self._last_input.pop(partition, None)
                self._pending.discard(partition)

    def _adopt_pending(self) -> None:
        """Under the batch lock: local state of newly assigned partitions made current."""
        with self._meta:
            wanted = sorted(self._pending)
        if not wanted:
            return
        state, _sink = self._open()
        backoff = 0.2
        while True:  # ClickHouse away: wait for it, as the sink does (back-pressure)
            client = connect(self._settings)
            try:
                ensure_schema(self._settings, client)
                state.adopt(wanted, client)
                break
            except OperationalError as exc:
                log.warning(
                    "count: adopting %s failed (retrying in %.1fs): %s", wanted, backoff, exc
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                client.disconnect()
        with self._meta:
            for partition in wanted:
                if partition in self._pending:  # not revoked meanwhile
                    self._pending.discard(partition)
                    self._positions[partition] = state.position(partition) or 0
                    self._last_input[partition] = time.monotonic()
        log.info("count: partitions %s at offsets %s", wanted, self._positions)

    def close(self) -> None:
        with self._lock:
            if self._state is not None:
                self._state.close()
                self._state = None
            if self._sink is not None:
                self._sink.close()
                self._sink = None
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # --- the batch ------------------------------------------------------------------------

    def process(self, delivered: list[Fetched]) -> CountResult:
        """Apply delivered bundles (any order, replays and gaps allowed); durable on return."""
        with self._lock:
            return self._process(delivered, fill_to=None)

    def catch_up(self, idle_seconds: float = 5.0) -> CountResult | None:
        """Read offsets that Kafka holds but delivery has not brought for a while.

        Covers a framework that skipped the tail of a partition: nothing later
        arrives to reveal the gap, yet finalize waits for every offset.
        """
        if not self._lock.acquire(blocking=False):
            return None  # a batch is being counted: nothing is idle
        try:
            return self._catch_up(idle_seconds)
        finally:
            self._lock.release()

    def _catch_up(self, idle_seconds: float) -> CountResult | None:
        self._adopt_pending()
        now = time.monotonic()
        with self._meta:
            owned = dict(self._positions)
            idle = [p for p in owned if now - self._last_input[p] >= idle_seconds]
        if not idle:
            return None
        highs = self._high_watermarks(idle)
        # At most MAX_FILL bundles a partition per tick: a far-behind position is
        # caught up in bounded steps, not read into memory at once.
        behind = {p: min(h, owned[p] + MAX_FILL) for p, h in highs.items() if h > owned[p]}
        if not behind:
            with self._meta:
                for p in idle:
                    if p in self._last_input:
                        self._last_input[p] = now
            return None
        return self._process([], fill_to=behind)

    def _process(self, delivered: list[Fetched], fill_to: dict[int, int] | None) -> CountResult:
        started = time.perf_counter()
        settings = self._settings
        self._adopt_pending()
        state, sink = self._open()
        with self._meta:
            owned = dict(self._positions)
        offsets: dict[int, list[int]] = defaultdict(list)
        inputs: dict[tuple[int, int], Fetched] = {}
        for m in delivered:
            position = owned.get(m.partition)
            if position is None or m.offset < position:
                continue  # not ours (any more), or already applied
            offsets[m.partition].append(m.offset)
            inputs[(m.partition, m.offset)] = m
        fill_to = {p: high for p, high in (fill_to or {}).items() if p in owned}
        for partition, high in fill_to.items():
            offsets[partition].append(high)  # a sentinel: everything before it is wanted
        gaps = missing({p: owned[p] for p in offsets}, offsets)
        if fill_to:
            for partition, high in fill_to.items():
                offsets[partition].remove(high)
        if gaps:
            for m in fetch(self._reader_consumer(), settings.by_id_topic, gaps):
                offsets[m.partition].append(m.offset)
                inputs[(m.partition, m.offset)] = m
        if not inputs:
            return CountResult(0, 0, 0, 0, 0)
        ordered = sorted(inputs.values(), key=lambda m: (m.partition, m.offset))
        records = [
            Record(m.partition, bundles.position(m.offset, i), event)
            for m in ordered
            for i, event in enumerate(bundles.unpack(m.value or b"[]", settings.zone))
        ]
        seen = state.owners({r[2].event_id: r[0] for r in records})  # (shard, position, event)
        counters = Overlay(state)
        outcome = apply_batch(records, seen, counters, settings.zone)
        self._dead_letter_conflicts(outcome)
        terminals: dict[tuple[str, str], datetime] = {}  # liveness, heartbeats included
        for r in records:
            e = r.event
            terminal = (e.hall_id, e.window_id)
            latest = terminals.get(terminal)
            if latest is None or e.occurred_at > latest:
                terminals[terminal] = e.occurred_at
        positions = {p: max(offs) + 1 for p, offs in offsets.items() if offs}
        late = self._finalized.late(outcome.newly_counted, settings.zone)
        sink.write(
            outcome.dirty,
            outcome.owned,
            terminals=terminals,
            late=late,
            progress=positions,
            heartbeats=outcome.heartbeats,
        )
        state.commit(
            (  # a first-seen record owns its id: apply_batch noted (fingerprint, position)
                (r.shard, r.event.event_id, seen[r.event.event_id]) for r in outcome.first_seen
            ),
            counters.written,
            positions,
        )
        now = time.monotonic()
        with self._meta:
            for partition, position in positions.items():
                if partition in self._positions:  # still ours
                    self._positions[partition] = position
                    self._last_input[partition] = now
        self.tallies.batch(len(ordered), len(records), time.perf_counter() - started)
        if outcome.conflicts:
            self.tallies.rejected(RejectReason.CONFLICTING_DUPLICATE, len(outcome.conflicts))
        if self._observer is not None:
            self._observer.counted(
                outcome,
                {(m.partition, m.offset): m.timestamp_ms / 1000 for m in ordered},
                late,
            )
        return CountResult(
            len(ordered),
            len(records),
            len(outcome.newly_counted),
            len(outcome.duplicates),
            len(outcome.conflicts),
        )

    # --- Kafka helpers --------------------------------------------------------------------

    def _dead_letter_conflicts(self, outcome: BatchOutcome) -> None:
        """Conflicts to the DLQ, acknowledged before anything says the batch is done."""
        if not outcome.conflicts:
            return
        settings = self._settings
        if self._producer is None:
            self._producer = Producer(producer_config(settings))
        now = datetime.now(UTC)
        for record, previous in outcome.conflicts:
            rejection = EventRejected(
                RejectReason.CONFLICTING_DUPLICATE,
                "event_id",
                f"the content first seen at position {previous.position} "
                f"(fingerprint {previous.fingerprint})",
                f"different content (fingerprint {record.event.fingerprint()})",
            )
            source = SourcePosition(
                settings.by_id_topic, record.shard, record.position >> bundles.INDEX_BITS, None
            )
            self._producer.produce(
                settings.dlq_topic,
                key=record.event.event_id.encode(),
                value=dead_letter(rejection.as_dict(), record.event.to_json(), source, None, now),
                headers={"reason": rejection.reason.value.encode()},
                on_delivery=self._dlq_delivered,
            )
        remaining = self._producer.flush(settings.worker_ack_timeout_seconds)
        if remaining or self._dlq_failures:
            detail = self._dlq_failures[0] if self._dlq_failures else f"{remaining} unacknowledged"
            self._dlq_failures.clear()
            raise OperationalError(
                f"count: dead letters to {settings.dlq_topic!r} not acknowledged ({detail})"
            )

    def _dlq_delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._dlq_failures.append(str(err))

    def _reader_consumer(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(
                consumer_config(
                    self._settings,
                    f"{self._settings.app_id}-gap-reader",
                    isolation_level="read_committed",
                )
            )
        return self._reader

    def _high_watermarks(self, partitions: list[int]) -> dict[int, int]:
        reader = self._reader_consumer()
        topic = self._settings.by_id_topic
        try:
            return {
                p: int(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in partitions
            }
        except KafkaException as exc:
            raise OperationalError(f"count: cannot read the end of {topic!r}: {exc}") from exc
