"""Reading the dead-letter queue: list, export and replay rejected messages.

Replay re-validates each kept original with today's validator and clock and
re-sends only those that now pass (a contract or clock fix, or a hand-fixed
export re-emitted with ``hallstats emit``). Re-sending is safe: counting is
idempotent by event_id, so replaying twice changes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from hallstats.errors import OperationalError
from hallstats.kafka import consumer_config, producer_config
from hallstats.settings import Settings
from schemas.dlq import DeadLetter
from schemas.events import parse_event
from schemas.rejections import EventRejected, RejectReason


def read(settings: Settings, *, reason: str | None = None) -> Iterator[DeadLetter]:
    """Every dead letter from the start of the DLQ to its current end."""
    consumer = Consumer(consumer_config(settings, f"{settings.app_id}-dlq-reader"))
    try:
        meta = consumer.list_topics(settings.dlq_topic, timeout=10).topics.get(settings.dlq_topic)
        if meta is None or meta.error is not None:
            return
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.dlq_topic, p), timeout=10
            )
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(settings.dlq_topic, p, 0) for p in ends])
        while ends:
            msg = consumer.poll(5.0)
            if msg is None:
                raise OperationalError(f"DLQ {settings.dlq_topic!r}: no answer from Kafka in 5 s")
            if msg.error() is not None:
                continue
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            letter = DeadLetter.from_json(json.loads(msg.value() or b"{}"), offset)
            if reason is None or letter.reason == reason:
                yield letter
    except KafkaException as exc:
        raise OperationalError(f"DLQ {settings.dlq_topic!r}: {exc}") from exc
    finally:
        consumer.close()


def export(letters: Iterator[DeadLetter], path: Path) -> int:
    """Originals as JSON Lines (invalid UTF-8 replaced), ready to fix and ``emit``."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for letter in letters:
            if letter.original is None:
                continue
            out.write(letter.original.decode("utf-8", errors="replace").replace("\n", " ") + "\n")
            count += 1
    return count


@dataclass(frozen=True)
class ReplayReport:
    resent: int
    still_rejected: dict[str, int]


def replay(settings: Settings, letters: Iterator[DeadLetter]) -> ReplayReport:
    prod = Producer(producer_config(settings))
    now = datetime.now(UTC)
    resent = 0
    still: Counter[str] = Counter()
    for letter in letters:
        if letter.reason == RejectReason.CONFLICTING_DUPLICATE or letter.original is None:
            still[letter.reason] += 1  # the first-seen content stands; resending cannot help
            continue
        try:
            parse_event(letter.original, max_bytes=settings.max_message_bytes, now=now)
        except EventRejected as rejection:
            still[rejection.reason.value] += 1
            continue
        prod.produce(settings.topic, value=letter.original, key=letter.key)
        prod.poll(0)
        resent += 1
    if prod.flush(60):
        raise OperationalError("DLQ replay: messages undelivered after 60 s; is Kafka running?")
    return ReplayReport(resent, dict(still))
