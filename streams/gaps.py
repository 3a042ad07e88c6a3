"""Offset gap guard: every offset of an input partition is processed, or none.

Faust acknowledges some messages it never hands to the agent (for example
"skipped" events around a rebalance) and treats offsets it did not see as a
gap that counts as acknowledged. A replay of the SIGKILL fault test lost one
raw message that way. The agents therefore check that the offsets of each
partition arrive contiguously from where the group's commit left them, and
read any missing offsets straight from Kafka before acknowledging the batch.
Offsets that hold no message (a transaction marker of a transactional
producer) are simply absent from the fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from hallstats.errors import OperationalError
from hallstats.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class GapGuard:
    """Next expected offset per partition of one topic, for one consumer generation."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._expected: dict[int, int] = {}

    def reset(self) -> None:
        """Forget positions: called on every rebalance."""
        self._expected.clear()

    def _start(self, partitions: Iterable[int]) -> None:
        unknown = [p for p in partitions if p not in self._expected]
        if not unknown:
            return
        consumer = Consumer(
            {
                "bootstrap.servers": self._settings.kafka_bootstrap,
                "group.id": self._settings.app_id,
                "enable.auto.commit": False,
            }
        )
        try:
            committed = consumer.committed(
                [TopicPartition(self._topic, p) for p in unknown], timeout=15
            )
            for tp in committed:
                if tp.offset >= 0:
                    self._expected[tp.partition] = tp.offset
                else:  # nothing committed yet: the group starts at the earliest offset
                    low, _high = consumer.get_watermark_offsets(
                        TopicPartition(self._topic, tp.partition), timeout=15
                    )
                    self._expected[tp.partition] = low
        except KafkaException as exc:
            raise OperationalError(
                f"gap guard: cannot read offsets of {self._topic!r}: {exc}"
            ) from exc
        finally:
            consumer.close()

    def positions(self) -> dict[int, int]:
        """Per partition, the offset below which everything has been seen."""
        return dict(self._expected)

    def missing(self, offsets: dict[int, list[int]]) -> dict[int, list[tuple[int, int]]]:
        """Ranges (first, last inclusive) not seen before or between these offsets."""
        self._start(offsets)
        gaps: dict[int, list[tuple[int, int]]] = {}
        for partition, seen in offsets.items():
            expected = self._expected[partition]
            for offset in sorted(seen):
                if offset > expected:
                    gaps.setdefault(partition, []).append((expected, offset - 1))
                expected = max(expected, offset + 1)
            self._expected[partition] = expected
        return gaps

    def fetch(self, gaps: dict[int, list[tuple[int, int]]]) -> list[Fetched]:
        """Read the given offset ranges directly (blocking; run it in a thread)."""
        found: list[Fetched] = []
        consumer = Consumer(
            {
                "bootstrap.servers": self._settings.kafka_bootstrap,
                "group.id": f"{self._settings.app_id}-gap-guard",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        try:
            for partition, ranges in gaps.items():
                for first, last in ranges:
                    log.warning(
                        "offsets %s..%s of %s[%s] not delivered by Faust; reading them directly",
                        first,
                        last,
                        self._topic,
                        partition,
                    )
                    consumer.assign([TopicPartition(self._topic, partition, first)])
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(self._topic, partition), timeout=15
                    )
                    position = first
                    while position <= last and position < high:
                        msg = consumer.poll(10.0)
                        if msg is None:
                            raise OperationalError(
                                f"gap guard: {self._topic}[{partition}] offsets {position}..{last} "
                                "unreadable within 10 s"
                            )
                        if msg.error() is not None:
                            continue
                        offset = int(msg.offset() or 0)
                        position = offset + 1
                        if first <= offset <= last:
                            found.append(
                                Fetched(
                                    partition, offset, msg.key(), msg.value(), msg.timestamp()[1]
                                )
                            )
        except KafkaException as exc:
            raise OperationalError(f"gap guard: cannot read {self._topic!r}: {exc}") from exc
        finally:
            consumer.close()
        return found
