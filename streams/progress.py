"""Has the worker processed (and written) everything already in Kafka?

Each stage records how far it has come where its outputs are durable: the
intake stage commits raw-topic offsets in its own consumer group after Kafka
acknowledged its bundles and dead letters; the counting stage writes its next
offset per by-event-id partition to ClickHouse's ``progress`` table after the
batch's counters. The check runs stage by stage: first the raw topic
(everything validated and forwarded), then the by-event-id topic as it
stands *after* that (everything counted and in ClickHouse).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from hallstats.clickhouse import connect
from hallstats.errors import OperationalError
from hallstats.kafka import consumer_config
from hallstats.settings import Settings
from schemas.ddl import ensure_schema
from schemas.queries import durable_positions

_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
}


@dataclass(frozen=True)
class Lag:
    topic: str
    partition: int
    committed: int
    high: int

    @property
    def behind(self) -> int:
        return max(0, self.high - self.committed)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(consumer_config(settings, settings.intake_group, socket_timeout_ms=5000))


def lags(
    settings: Settings, topic: str, consumer: Consumer | None = None, *, retry_for: float = 30.0
) -> list[Lag]:
    """Committed offset and high watermark per partition of ``topic``.

    Errors Kafka calls retriable (a leader moving after a broker restart) are
    retried for up to ``retry_for`` seconds before they become an OperationalError.
    """
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return _lags_once(settings, topic, consumer)
        except OperationalError as exc:
            cause = exc.__cause__
            error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _TRANSIENT
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _counted_positions(settings: Settings) -> dict[int, int]:
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        return durable_positions(client, settings)
    finally:
        client.disconnect()


def _lags_once(settings: Settings, topic: str, consumer: Consumer | None) -> list[Lag]:
    own = consumer or _consumer(settings)
    try:
        metadata = own.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(info.partitions)]
        if topic == settings.by_id_topic:
            counted = _counted_positions(settings)
            done = {tp.partition: counted.get(tp.partition, 0) for tp in tps}
        else:
            done = {tp.partition: max(tp.offset, 0) for tp in own.committed(tps, timeout=10)}
        result = []
        for tp in tps:
            _low, high = own.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            result.append(Lag(topic, tp.partition, done[tp.partition], high))
        return result
    except KafkaException as exc:
        raise OperationalError(
            f"Kafka at {settings.kafka_bootstrap}: cannot read offsets of {topic!r}: {exc}"
        ) from exc
    finally:
        if consumer is None:
            own.close()


def wait_until_caught_up(
    settings: Settings,
    timeout: float,
    *,
    poll: float = 0.5,
    on_progress: Callable[[list[Lag]], None] | None = None,
) -> None:
    """Block until both stages have committed past what Kafka held on entry."""
    deadline = time.monotonic() + timeout
    consumer = _consumer(settings)
    try:
        for topic in (settings.topic, settings.by_id_topic):
            targets = {lag.partition: lag.high for lag in lags(settings, topic, consumer)}
            while True:
                current = [
                    Lag(topic, lag.partition, lag.committed, targets.get(lag.partition, 0))
                    for lag in lags(settings, topic, consumer)
                ]
                if on_progress is not None:
                    on_progress(current)
                if all(lag.behind == 0 for lag in current):
                    break
                if time.monotonic() > deadline:
                    behind = ", ".join(
                        f"partition {lag.partition} at {lag.committed} of {lag.high}"
                        for lag in current
                        if lag.behind
                    )
                    raise OperationalError(
                        f"worker {settings.app_id!r} has not processed everything in "
                        f"{topic!r} within {timeout:.0f} s ({behind}); is `hallstats worker` "
                        "running with the same HALLSTATS_APP_ID?"
                    )
                time.sleep(poll)
    finally:
        consumer.close()
