"""The counting stage's local state: a RocksDB cache of what ClickHouse already holds.

Per partition of the by-event-id topic it keeps the next offset to apply, the
owner of every event_id (fingerprint and position) and the period counters.
RocksDB keeps it on disk: a restart opens it in milliseconds and memory does
not grow with history, unlike tables that replay a changelog into a dict.

It is only a cache. ClickHouse is the durable record, written in this order
for every batch: the events archive (owners), the counters (absolute values
with versions), then ``progress`` (next offset per partition). The local
state is written after all three. When a partition is assigned, its local
position is compared with ClickHouse's ``progress``: equal means nobody
changed the partition since this process wrote it; anything else (another
process moved it on, the folder was lost, a new host) rebuilds the partition
from ClickHouse, reading in the reverse order of the writes (progress,
counters, archive) so the owners read are never older than the counters read.
Replaying from the rebuilt position is then exact (:mod:`streams.ledger`).

Heartbeats are not archived as events; their owners are kept in
``heartbeat_owners``, written with the archive, so a rebuild knows them too.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from hallstats.clickhouse import execute, execute_iter
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.catalog import EventType
from schemas.queries import durable_positions, sync_replicas
from streams.ledger import PeriodCounts, PeriodKey, SeenRecord

log = logging.getLogger(__name__)

_POSITION, _OWNER, _COUNTER = b"p", b"o", b"c"


def _prefix(kind: bytes, partition: int) -> bytes:
    return kind + partition.to_bytes(2, "big")


def _owner_key(partition: int, event_id: str) -> bytes:
    return _prefix(_OWNER, partition) + _id_bytes(event_id)


def _id_bytes(event_id: str) -> bytes:
    # event_id is a canonical lower-case UUID (schemas.events): its 16 bytes.
    return bytes.fromhex(event_id.replace("-", ""))


def _owner_value(record: SeenRecord) -> bytes:
    return bytes.fromhex(record.fingerprint) + record.position.to_bytes(8, "big")


def _owner_record(raw: bytes) -> SeenRecord:
    return SeenRecord(raw[:16].hex(), int.from_bytes(raw[16:24], "big"))


def _counter_key(key: PeriodKey) -> bytes:
    return _prefix(_COUNTER, key.shard) + key.encode().encode()


@dataclass(frozen=True)
class Rebuilt:
    partition: int
    position: int
    owners: int
    periods: int
    seconds: float


class _Slot:
    """An exclusive sub-folder, so several workers on one host never share a RocksDB.

    A restarted worker takes the lowest free slot again and so finds its own state.
    Counting process ``i`` of ``n`` in one worker (:mod:`streams.count_pool`) looks at
    slots ``i, i + n, ...`` first: it counts the partitions ``p % n == i``, so it
    finds the state of its own partitions again, not that of its sibling.
    """

    def __init__(self, base: Path, first: int = 0, stride: int = 1) -> None:
        base.mkdir(parents=True, exist_ok=True)
        for n in [*range(first, 64, stride), *range(64)]:
            path = base / f"slot-{n}"
            path.mkdir(exist_ok=True)
            handle: IO[str] = (path / "lock").open("w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self.path, self._handle = path, handle
            return
        raise OperationalError(f"no free state slot under {base} (64 workers on one host?)")

    def release(self) -> None:
        self._handle.close()


class LocalState:
    """Owners, counters and positions of the partitions this process counts."""

    def __init__(self, settings: Settings, slot: tuple[int, int] = (0, 1)) -> None:
        """``slot`` = (this counting process, of how many) in its worker."""
        self._settings = settings
        self._slot = _Slot(settings.worker_data_dir.resolve() / "count-state", *slot)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(256)
        # Nearly every owner lookup misses (a new event_id): bloom filters answer those
        # without reading blocks, in the tables and in the memtable too, and a small
        # memtable keeps the skiplist in cache. Measured with 646k new ids in batches
        # of 20k: 4.3 us a lookup with the defaults, 1.6 us with these filters.
        table = BlockBasedOptions()
        table.set_bloom_filter(16, False)
        table.set_block_cache(Cache(32 << 20))
        options.set_block_based_table_factory(table)
        options.set_write_buffer_size(4 << 20)
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
        self._db = Rdict(str(self._slot.path / "rocksdb"), options)
        self._keys: dict[str, bytes] = {}  # event_id -> owner key, of the last owners()
        log.info("count state: %s", self._slot.path)

    def close(self) -> None:
        self._db.close()
        self._slot.release()

    # --- reads ----------------------------------------------------------------------------

    def position(self, partition: int) -> int | None:
        raw = self._db.get(_prefix(_POSITION, partition))
        return None if raw is None else int.from_bytes(raw, "big")

    def owners(self, partition_of: dict[str, int]) -> dict[str, SeenRecord]:
        """Known owners of these event_ids (``event_id -> its partition``), one multi-get.

        The keys built here are kept for :meth:`commit` of the same batch (nearly
        every id is new and written back): building them is a good part of the cost.
        """
        ids = list(partition_of)
        prefixes: dict[int, bytes] = {}
        keys = []
        for i in ids:  # _owner_key, its prefix made once per partition
            partition = partition_of[i]
            prefix = prefixes.get(partition)
            if prefix is None:
                prefix = prefixes[partition] = _prefix(_OWNER, partition)
            keys.append(prefix + _id_bytes(i))
        self._keys = dict(zip(ids, keys, strict=True))
        values = cast(list[bytes | None], self._db.get(cast(list[Any], keys)))
        return {i: _owner_record(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def counter(self, key: PeriodKey) -> PeriodCounts | None:
        raw = self._db.get(_counter_key(key))
        return None if raw is None else PeriodCounts.from_json(orjson.loads(raw))

    # --- writes ---------------------------------------------------------------------------

    def commit(
        self,
        owners: Iterable[tuple[int, str, SeenRecord]],
        counters: dict[PeriodKey, PeriodCounts],
        positions: dict[int, int],
    ) -> None:
        """One atomic write: a crash leaves the state before or after the batch."""
        batch = WriteBatch(raw_mode=True)
        put, known = batch.put, self._keys
        for partition, event_id, record in owners:
            owner = known.get(event_id)
            if owner is None or owner[1:3] != partition.to_bytes(2, "big"):
                owner = _owner_key(partition, event_id)
            put(owner, _owner_value(record))
        for period, value in counters.items():
            batch.put(_counter_key(period), orjson.dumps(value.to_json()))
        for partition, position in positions.items():
            batch.put(_prefix(_POSITION, partition), position.to_bytes(8, "big"))
        self._db.write(batch)

    def clear(self, partition: int) -> None:
        for kind in (_POSITION, _OWNER, _COUNTER):
            start = _prefix(kind, partition)
            self._db.delete_range(start, _prefix(kind, partition + 1))

    # --- agreement with ClickHouse --------------------------------------------------------

    def adopt(self, partitions: Iterable[int], client: Any) -> list[Rebuilt]:
        """Make the local state of newly assigned partitions agree with ClickHouse."""
        rebuilt = []
        stored = durable_positions(client, self._settings)
        for partition in sorted(partitions):
            local = self.position(partition)
            durable = stored.get(partition)
            if local is not None and local == durable:
                continue
            rebuilt.append(self.rebuild(partition, client))
        return rebuilt

    def rebuild(self, partition: int, client: Any) -> Rebuilt:
        """Reload one partition from ClickHouse (progress, then counters, then owners)."""
        started = time.monotonic()
        settings = self._settings
        db = settings.clickhouse_database
        self.clear(partition)
        sync_replicas(client, settings)  # never rebuild from a replica that lags
        position = durable_positions(client, settings).get(partition, 0)
        periods: dict[PeriodKey, tuple[dict[Any, int], int]] = {}
        rows = execute(
            client,
            f"""
SELECT period_kind, period, period_start, hall_id, department, event_type,
       argMax(value, version), max(version)
FROM {db}.counters WHERE shard = %(p)s
GROUP BY period_kind, period, period_start, hall_id, department, event_type""",
            {"p": partition},
            settings=settings,
        )
        for kind, period, start, hall, department, event_type, value, version in rows:
            key = PeriodKey(partition, str(kind), str(period), start)
            counts, seen_version = periods.get(key, ({}, -1))
            counts[(str(hall), str(department), EventType(str(event_type)))] = int(value)
            periods[key] = (counts, max(seen_version, int(version)))
        counters = {k: PeriodCounts(c, v) for k, (c, v) in periods.items()}
        self.commit((), counters, {})
        owners = 0
        batch: list[tuple[int, str, SeenRecord]] = []
        for event_id, fingerprint, source_position in execute_iter(
            client,
            f"SELECT event_id, fingerprint, source_position FROM {db}.events "
            f"WHERE shard = {int(partition)} UNION ALL "
            f"SELECT event_id, fingerprint, source_position FROM {db}.heartbeat_owners "
            f"WHERE shard = {int(partition)}",
            settings=settings,
        ):
            owner = SeenRecord(str(fingerprint), int(source_position))
            batch.append((partition, str(event_id), owner))
            if len(batch) >= 50_000:
                self.commit(batch, {}, {})
                owners += len(batch)
                batch = []
                if owners % 500_000 == 0:  # a long rebuild shows that it moves
                    log.info("count state: partition %s: %s owners loaded", partition, owners)
        owners += len(batch)
        self.commit(batch, {}, {partition: position})
        result = Rebuilt(partition, position, owners, len(counters), time.monotonic() - started)
        log.info(
            "count state: partition %s rebuilt from ClickHouse at offset %s "
            "(%s owners, %s periods) in %.1f s",
            partition,
            position,
            owners,
            len(counters),
            result.seconds,
        )
        return result


class Overlay(MutableMapping[PeriodKey, PeriodCounts]):
    """Counters as :func:`streams.ledger.apply_batch` sees them: reads fall through to
    the local state, writes stay here until the batch is durable."""

    def __init__(self, state: LocalState) -> None:
        self._state = state
        self.written: dict[PeriodKey, PeriodCounts] = {}

    def __getitem__(self, key: PeriodKey) -> PeriodCounts:
        value = self.written.get(key)
        if value is None:
            value = self._state.counter(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: PeriodKey, value: PeriodCounts) -> None:
        self.written[key] = value

    def __delitem__(self, key: PeriodKey) -> None:  # pragma: no cover - never deleted
        raise NotImplementedError

    def __iter__(self) -> Iterator[PeriodKey]:  # pragma: no cover - never iterated
        return iter(self.written)

    def __len__(self) -> int:  # pragma: no cover
        return len(self.written)
