"""Which record owns each event_id: a durable table plus an in-memory index.

Durable form: the Faust table ``owners`` keyed by bundle (``"<partition>:<offset>"``)
whose value lists the events that bundle was first to carry. One changelog
record per bundle instead of one per event, and all of a bundle's claims land
atomically. Lookups go by event_id, so an index is built per partition from the
table on first use after (re)assignment and kept up to date as bundles are
processed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

from streams.ledger import SeenRecord

Entry = tuple[str, str, int]  # event_id, fingerprint, position


def bundle_key(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


class OwnershipIndex(MutableMapping[str, SeenRecord]):
    """``event_id -> SeenRecord`` over all partitions, loaded lazily per partition.

    ``load(partition)`` yields the durable table's (key, value) pairs for one
    partition; ``partition_of(event_id)`` says where an event_id lives.
    """

    def __init__(
        self,
        load: Callable[[int], Iterable[tuple[str, Any]]],
        partition_of: Callable[[str], int],
    ) -> None:
        self._load = load
        self._partition_of = partition_of
        self._parts: dict[int, dict[str, SeenRecord]] = {}

    def forget(self) -> None:
        """Drop everything: called on rebalance, the table is the truth."""
        self._parts.clear()

    def _part(self, partition: int) -> dict[str, SeenRecord]:
        part = self._parts.get(partition)
        if part is None:
            part = {}
            for _key, entries in self._load(partition):
                for event_id, fingerprint, pos in entries:
                    part[event_id] = SeenRecord(fingerprint, int(pos))
            self._parts[partition] = part
        return part

    def __getitem__(self, event_id: str) -> SeenRecord:
        return self._part(self._partition_of(event_id))[event_id]

    def __setitem__(self, event_id: str, record: SeenRecord) -> None:
        self._part(self._partition_of(event_id))[event_id] = record

    def __delitem__(self, event_id: str) -> None:  # pragma: no cover - never deleted
        del self._part(self._partition_of(event_id))[event_id]

    def __iter__(self) -> Iterator[str]:
        for part in self._parts.values():
            yield from part

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts.values())
