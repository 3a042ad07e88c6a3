"""Offset gaps: every offset of a counted partition is applied, or none.

A framework consumer may leave offsets undelivered (Faust did so around
restarts: it acknowledged messages it never handed to the agent). The
counting stage therefore tracks its own next offset per partition and reads
any offset missing before or between delivered ones straight from Kafka.
The by-event-id topic is written by an idempotent, non-transactional producer,
so its offsets are contiguous: a jump in a fetch means retention deleted offsets
that were never counted, which is an error, never a silent skip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from hallstats.errors import OperationalError
from streams import bundles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    """One message as the counting stage needs it, however it was read."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # the oldest raw message's Kafka time, when the bundle says


def missing(
    expected: dict[int, int], offsets: dict[int, list[int]]
) -> dict[int, list[tuple[int, int]]]:
    """Ranges (first, last inclusive) not delivered before or between ``offsets``.

    ``expected`` is the next offset per partition; offsets below it are replays.
    """
    gaps: dict[int, list[tuple[int, int]]] = {}
    for partition, seen in offsets.items():
        position = expected[partition]
        for offset in sorted(seen):
            if offset > position:
                gaps.setdefault(partition, []).append((position, offset - 1))
            position = max(position, offset + 1)
    return gaps


def fetch(consumer: Consumer, topic: str, gaps: dict[int, list[tuple[int, int]]]) -> list[Fetched]:
    """Read the given offset ranges directly (blocking) with an assigned consumer."""
    found: list[Fetched] = []
    try:
        for partition, ranges in gaps.items():
            for first, last in ranges:
                log.warning(
                    "offsets %s..%s of %s[%s] were not delivered; reading them directly",
                    first,
                    last,
                    topic,
                    partition,
                )
                consumer.assign([TopicPartition(topic, partition, first)])
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=15
                )
                position = first
                while position <= last and position < high:
                    msg = consumer.poll(10.0)
                    if msg is None:
                        raise OperationalError(
                            f"{topic}[{partition}] offsets {position}..{last} "
                            "unreadable within 10 s"
                        )
                    if msg.error() is not None:
                        continue
                    offset = int(msg.offset() or 0)
                    if offset > position and position < high:
                        # Retention deleted what was never counted: say so, loudly.
                        raise OperationalError(
                            f"{topic}[{partition}] offsets {position}..{offset - 1} are gone "
                            "from Kafka (retention?) but were never counted; the figures "
                            "would be incomplete"
                        )
                    position = offset + 1
                    if first <= offset <= last:
                        found.append(
                            Fetched(
                                partition,
                                offset,
                                msg.key(),
                                msg.value(),
                                bundles.raw_timestamp_ms(msg.headers(), msg.timestamp()[1]),
                            )
                        )
        consumer.unassign()
    except KafkaException as exc:
        raise OperationalError(f"cannot read {topic!r} directly: {exc}") from exc
    return found
