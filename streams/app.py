"""The Faust app: two stages joined by a topic partitioned by event_id.

1. ``validate`` reads raw terminal messages (keyed any way, or not at all),
   sends rejections to the DLQ and forwards valid events in bundles to the
   partition their event_id hashes to (:mod:`streams.bundles`), so every copy
   of one event meets in one partition.
2. ``count`` dedups by event_id (:mod:`streams.ownership`), maintains
   day/week/year counters in a Faust table (:mod:`streams.ledger`), writes them
   to ClickHouse, and only then acknowledges its input. A commit therefore
   always means "in ClickHouse", which is what ``hallstats finalize`` waits for.

Both stages acknowledge a batch only after its effects are durable, using
``noack_take`` + explicit ``ack`` (``take`` would ack a failed batch).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.types import TP

from consumers.clickhouse_sink import ClickHouseSink
from hallstats.settings import Settings
from schemas.events import EventRejected, RejectReason, ServiceEvent, parse_event
from streams import autofinalize, bundles
from streams.dlq import SourcePosition, dead_letter
from streams.gaps import Fetched, GapGuard
from streams.lateness import FinalizedWeeks
from streams.ledger import PeriodCounts, PeriodKey, Record, apply_batch
from streams.metrics import WorkerMetrics
from streams.ownership import OwnershipIndex, bundle_key

log = logging.getLogger(__name__)


class _TableMap(MutableMapping[Any, Any]):
    """Typed view over a Faust table, addressed per source partition.

    Faust picks a table entry's changelog partition (and, for RocksDB, its
    store) from the *current event*. In batch processing that is merely the
    last event of the batch, so every access first makes an event of the
    key's own partition current.
    """

    def __init__(
        self,
        table: Any,
        encode_key: Callable[[Any], Any],
        decode_value: Callable[[Any], Any],
        encode_value: Callable[[Any], Any],
        partition_of: Callable[[Any], int],
    ) -> None:
        self._table = table
        self._ek = encode_key
        self._dv = decode_value
        self._ev = encode_value
        self._partition_of = partition_of
        self.events: dict[int, Any] = {}  # partition -> an event of the current batch

    def _enter(self, key: Any) -> None:
        _current_event.set(weakref.ref(self.events[self._partition_of(key)]))

    def __getitem__(self, key: Any) -> Any:
        self._enter(key)
        raw = self._table.get(self._ek(key))
        if raw is None:
            raise KeyError(key)
        return self._dv(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._enter(key)
        self._table[self._ek(key)] = self._ev(value)

    def __delitem__(self, key: Any) -> None:  # pragma: no cover - never deleted
        self._enter(key)
        del self._table[self._ek(key)]

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - not needed by the ledger
        raise NotImplementedError("iteration over a partitioned table is not supported")

    def __len__(self) -> int:  # pragma: no cover
        return len(self._table)


def _fatal_on_error(
    agent: Callable[[faust.StreamT[Any]], Awaitable[None]],
) -> Callable[[faust.StreamT[Any]], Awaitable[None]]:
    """Exit the process when an agent fails instead of letting Faust restart it.

    A restarted agent loses its unacknowledged batch from the stream, so its
    partitions would stall. Exiting keeps the invariant simple: a restart
    resumes from the last commit, and idempotent state absorbs the replay.
    """

    @functools.wraps(agent)
    async def guarded(stream: faust.StreamT[Any]) -> None:
        try:
            await agent(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical(
                "agent %s failed; exiting (restart resumes from the last commit)",
                agent.__name__,
                exc_info=True,
            )
            logging.shutdown()
            os._exit(70)

    return guarded


class _PartitionMessage:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class _PartitionEvent:
    """Stands in for a Faust event when a partition's only input came from the gap
    guard: Faust routes table writes by the current event's partition."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _PartitionMessage(topic, partition)


async def _fill_gaps(guard: GapGuard, inputs: list[Fetched]) -> list[Fetched]:
    """Offsets Faust skipped before or inside this batch, read directly from Kafka."""
    offsets: dict[int, list[int]] = defaultdict(list)
    for m in inputs:
        offsets[m.partition].append(m.offset)
    gaps = await asyncio.to_thread(guard.missing, offsets)
    return await asyncio.to_thread(guard.fetch, gaps) if gaps else []


async def _ack_fetched(app: faust.App, topic: str, fetched: list[Fetched]) -> None:
    """Tell Faust's bookkeeping that gap-filled offsets are done."""
    consumer = cast(Any, app.consumer)
    for m in fetched:
        await consumer._add_gap(TP(topic, m.partition), m.offset, m.offset)


async def _commit_processed(app: faust.App, topic: str, guard: GapGuard) -> None:
    """Commit what this batch made durable, whatever Faust's own bookkeeping thinks.

    After a restart Faust's acked/committed bookkeeping can stall below offsets it
    never delivered. The guard knows every offset below its position has been
    processed and written, so that position is a safe commit. Faust's record is
    moved up with it, so Faust never commits a lower offset afterwards.
    """
    consumer = cast(Any, app.consumer)
    offsets = {}
    for partition, position in guard.positions().items():
        tp = TP(topic, partition)
        known = consumer._committed_offset.get(tp)
        if known is None or known < position:
            offsets[tp] = position
    if offsets:
        await app.producer.flush()  # table changelogs first, as Faust's own commit does
        await consumer._commit(offsets)
        consumer._committed_offset.update(offsets)


def build_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.worker_store,
        datadir=str(settings.worker_data_dir.resolve() / settings.app_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_max_request_size=2 * bundles.MAX_BUNDLE_BYTES,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_port=settings.worker_web_port,
        web_bind="127.0.0.1",
        stream_buffer_maxsize=max(4096, settings.worker_batch_size * 2),
        broker_commit_every=settings.worker_batch_size,
        broker_commit_interval=1.0,
    )
    metrics = WorkerMetrics(settings)  # metrics (issue 4): no-ops when metrics_port == 0
    metrics.install(app)
    finalized = FinalizedWeeks(settings)  # late-event records (issue 3)
    finalized.install(app)
    autofinalize.install(app, settings)
    raw_topic = app.topic(settings.topic, key_serializer="raw", value_serializer="raw")
    by_id = app.topic(
        settings.by_id_topic,
        partitions=settings.partitions,
        internal=True,
        key_serializer="raw",
        value_serializer="raw",
    )
    dlq = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    owners_table = app.Table("owners", partitions=settings.partitions, key_type=str)
    counter_table = app.Table("counters", partitions=settings.partitions, key_type=str)

    def load_owners(partition: int) -> Iterable[tuple[str, Any]]:
        prefix = f"{partition}:"
        return [(k, v) for k, v in owners_table.items() if k.startswith(prefix)]

    seen = OwnershipIndex(load_owners, lambda eid: bundles.partition_for(eid, settings.partitions))
    counters = _TableMap(
        counter_table,
        PeriodKey.encode,
        PeriodCounts.from_json,
        PeriodCounts.to_json,
        lambda k: int(k.shard),
    )

    raw_guard = GapGuard(settings, settings.topic)
    bundle_guard = GapGuard(settings, settings.by_id_topic)

    @app.on_partitions_revoked.connect
    async def _revoked(*_args: Any, **_kwargs: Any) -> None:
        seen.forget()
        raw_guard.reset()
        bundle_guard.reset()

    @app.on_partitions_assigned.connect
    async def _assigned(*_args: Any, **_kwargs: Any) -> None:
        seen.forget()
        raw_guard.reset()
        bundle_guard.reset()

    sink_holder: list[ClickHouseSink] = []

    def sink() -> ClickHouseSink:
        if not sink_holder:
            sink_holder.append(ClickHouseSink(settings, observer=metrics))  # metrics
            sink_holder[0].ensure_schema()
        return sink_holder[0]

    @app.agent(raw_topic)
    @_fatal_on_error
    async def validate(stream: Any) -> None:
        async for batch in stream.noack().noack_take(
            settings.worker_batch_size, within=settings.worker_batch_seconds
        ):
            now = datetime.now(UTC)
            pending = []
            targets: dict[int, list[ServiceEvent]] = defaultdict(list)
            oldest: dict[int, float] = {}  # metrics: oldest raw Kafka timestamp per target
            inputs = [
                Fetched(
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    int(e.message.timestamp * 1000),
                )
                for e in batch
            ]
            fetched = await _fill_gaps(raw_guard, inputs)
            inputs += fetched
            for msg in inputs:
                timestamp = msg.timestamp_ms / 1000
                try:
                    parsed = parse_event(msg.value, max_bytes=settings.max_message_bytes, now=now)
                except EventRejected as rejection:
                    metrics.rejected(rejection.reason)  # metrics
                    source = SourcePosition(
                        settings.topic, msg.partition, msg.offset, msg.timestamp_ms
                    )
                    value = dead_letter(rejection.as_dict(), msg.value, source, msg.key, now)
                    pending.append(
                        await dlq.send(
                            key=msg.key,
                            value=value,
                            headers={"reason": rejection.reason.value.encode()},
                        )
                    )
                    continue
                target = bundles.partition_for(parsed.event_id, settings.partitions)
                targets[target].append(parsed)
                oldest[target] = min(oldest.get(target, timestamp), timestamp)  # metrics
            for partition, events in sorted(targets.items()):
                headers = metrics.bundle_headers(oldest.get(partition))  # metrics
                for bundle in bundles.pack(events):
                    pending.append(
                        await by_id.send(value=bundle, partition=partition, headers=headers)
                    )
            await asyncio.gather(*pending)
            await _ack_fetched(app, settings.topic, fetched)
            for event in batch:
                await stream.ack(event)
            await _commit_processed(app, settings.topic, raw_guard)

    @app.agent(by_id)
    @_fatal_on_error
    async def count(stream: Any) -> None:
        async for batch in stream.noack().noack_take(64, within=settings.worker_batch_seconds):
            inputs = [
                Fetched(e.message.partition, e.message.offset, None, e.message.value, 0)
                for e in batch
            ]
            fetched = await _fill_gaps(bundle_guard, inputs)
            inputs += fetched
            inputs.sort(key=lambda m: (m.partition, m.offset))  # the ledger needs offset order
            records = [
                Record(m.partition, bundles.position(m.offset, i), event)
                for m in inputs
                for i, event in enumerate(bundles.unpack(m.value or b"[]"))
            ]
            by_partition: dict[int, Any] = {
                m.partition: _PartitionEvent(settings.by_id_topic, m.partition) for m in inputs
            }
            by_partition.update({e.message.partition: e for e in batch})
            counters.events = by_partition
            outcome = apply_batch(records, seen, counters, settings.zone)
            claims: dict[tuple[int, int], list[list[Any]]] = defaultdict(list)
            for r in outcome.first_seen:
                offset = r.position >> bundles.INDEX_BITS
                claims[(r.shard, offset)].append(
                    [r.event.event_id, r.event.fingerprint(), r.position]
                )
            for (partition, offset), entries in claims.items():
                _current_event.set(weakref.ref(by_partition[partition]))
                owners_table[bundle_key(partition, offset)] = entries
            pending = []
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
                    settings.by_id_topic,
                    record.shard,
                    record.position >> bundles.INDEX_BITS,
                    None,
                )
                pending.append(
                    await dlq.send(
                        key=record.event.event_id.encode(),
                        value=dead_letter(
                            rejection.as_dict(), record.event.to_json(), source, None, now
                        ),
                        headers={"reason": rejection.reason.value.encode()},
                    )
                )
            terminals: dict[tuple[str, str], datetime] = {}  # liveness, heartbeats included
            for r in records:
                terminal = (r.event.hall_id, r.event.window_id)
                if terminal not in terminals or r.event.occurred_at > terminals[terminal]:
                    terminals[terminal] = r.event.occurred_at
            await asyncio.to_thread(
                functools.partial(
                    sink().write,
                    outcome.dirty,
                    outcome.owned,
                    terminals=terminals,
                    late=finalized.late(outcome.newly_counted, settings.zone),
                )
            )
            await asyncio.gather(*pending)
            metrics.counted(outcome, batch)  # metrics: accepted, duplicates, latency, late
            await _ack_fetched(app, settings.by_id_topic, fetched)
            for event in batch:
                await stream.ack(event)
            await _commit_processed(app, settings.by_id_topic, bundle_guard)

    return app
