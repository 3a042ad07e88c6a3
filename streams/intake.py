"""Intake stage: raw terminal messages in, bundles by event_id and dead letters out.

One raw message is one event, so any per-message framework cost is paid per
event. This stage is therefore a plain confluent-kafka consumer working in
batches: validate each message, send rejections to the DLQ with their original
bytes, and forward valid events in bundles to the partition of the
by-event-id topic their id hashes to (:mod:`streams.bundles`). Offsets are
committed only after every output of the batch is acknowledged by Kafka, so a
crash replays, never loses; the counting stage dedups the replay by event_id.

It has a consumer group of its own (``<app_id>-intake``): Faust's group speaks
Faust's assignor protocol, which a plain consumer cannot join. Processes of
this stage scale up to the raw topic's partition count.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from hallstats.errors import OperationalError
from hallstats.kafka import consumer_config, producer_config
from hallstats.settings import Settings
from schemas.dlq import SourcePosition, dead_letter
from schemas.events import ServiceEvent, parse_event
from schemas.rejections import EventRejected
from streams import bundles
from streams.commits import CommitTracker
from streams.stage_stats import StageTallies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    messages: int
    forwarded: int
    rejected: int


class Intake:
    """Validate-and-forward over one consumer; ``run`` loops until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        tallies: StageTallies | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._tallies = tallies or StageTallies("intake")
        self._clock = clock
        self._consumer = Consumer(
            consumer_config(
                settings,
                settings.intake_group,
                partition_assignment_strategy="cooperative-sticky",
                session_timeout_ms=10_000,  # a killed member's partitions move in 10 s
                fetch_max_bytes=64 * 1024 * 1024,
                queued_max_messages_kbytes=256 * 1024,
                on_commit=self._on_commit,
                # Tailing a topic that terminals write to, each small produce would
                # answer a waiting fetch at once: thousands of tiny fetches a second.
                # Measured in bench.replay: the broker's CPU fell from 13.3 s to 6.0 s
                # per sample year, the run from 37 s to 32 s; an idle event waits 0.1 s.
                fetch_min_bytes=1_000_000,
                fetch_wait_max_ms=100,
            )
        )
        self._producer = Producer(
            producer_config(
                settings,
                batch_size=1_000_000,
                # message.max.bytes: producer_config's, over a bundle and a dead letter
                queue_buffering_max_kbytes=512 * 1024,
            )
        )
        self._failures: list[str] = []
        self.commits = CommitTracker()

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe([self._settings.topic], on_revoke=self._on_revoke)
        log.info(
            "intake: reading %s as group %s", self._settings.topic, self._settings.intake_group
        )
        try:
            while not stop.is_set():
                self._tallies.beat()
                batch = self._consumer.consume(
                    self._settings.worker_batch_size, timeout=self._settings.worker_batch_seconds
                )
                if batch:
                    self.process(batch)
                elif self.commits.has_retries():
                    self._commit({})
        finally:
            self.close()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Ask to commit what is durable before the partitions go. Asynchronous like
        every commit: if it lands after the next owner has started, that owner replays
        from the older offset, which counting dedups; nothing is lost."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit({}, only=revoked)

    def _commit(
        self, offsets: dict[tuple[str, int], int], only: set[tuple[str, int]] | None = None
    ) -> None:
        """Commit these and any earlier failed offsets, asynchronously (see streams.commits)."""
        within = self._assigned() if only is None else only
        pending = self.commits.to_commit(offsets, within, forget_others=only is None)
        if not pending:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in pending.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            self.commits.failed(pending)
            log.warning("intake: commit failed, retrying on the next batch: %s", exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The coordinator's answer to a commit (served inside ``consume``/``poll``)."""
        failed: dict[tuple[str, int], int] = {}
        for tp in partitions:
            if err is None and tp.error is None:
                self.commits.confirmed((tp.topic, tp.partition), tp.offset)
            elif tp.offset >= 0:
                failed[(tp.topic, tp.partition)] = tp.offset
        if failed:
            self.commits.failed(failed)
            log.warning("intake: commit failed, retrying on the next batch: %s", err)

    def _assigned(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def process(self, batch: list[Message]) -> BatchResult:
        """One batch to durable outputs, then its commit. Raises on any Kafka failure."""
        started = time.perf_counter()
        settings = self._settings
        now = self._clock()
        targets: dict[int, list[ServiceEvent]] = defaultdict(list)
        oldest: dict[int, int] = {}
        commit: dict[tuple[str, int], int] = {}
        rejected = messages = 0
        for msg in batch:
            error = msg.error()
            if error is not None:
                # Transport errors are retried by librdkafka; only a fatal one ends us.
                if error.fatal():
                    raise OperationalError(f"intake: reading {settings.topic!r} failed: {error}")
                log.warning("intake: %s", error)
                continue
            messages += 1
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            commit[(str(msg.topic()), partition)] = offset + 1
            value = msg.value()
            timestamp_ms = int(msg.timestamp()[1])
            try:
                event = parse_event(value, max_bytes=settings.max_message_bytes, now=now)
            except EventRejected as rejection:
                rejected += 1
                self._tallies.rejected(rejection.reason)
                source = SourcePosition(settings.topic, partition, offset, timestamp_ms)
                self._send(
                    settings.dlq_topic,
                    dead_letter(rejection.as_dict(), value, source, msg.key(), now),
                    key=msg.key(),
                    headers={"reason": rejection.reason.value.encode()},
                )
                continue
            target = bundles.partition_for(event.event_id, settings.partitions)
            targets[target].append(event)
            if timestamp_ms > 0:
                oldest[target] = min(oldest.get(target, timestamp_ms), timestamp_ms)
        forwarded = 0
        for target, events in targets.items():
            headers: dict[str, str | bytes | None] | None = (
                {bundles.RAW_TIMESTAMP_HEADER: str(oldest[target]).encode()}
                if target in oldest
                else None
            )
            for bundle in bundles.pack(events, settings.zone):
                self._send(settings.by_id_topic, bundle, partition=target, headers=headers)
            forwarded += len(events)
        self._flush()
        self._commit(commit)
        self._tallies.batch(messages, forwarded, time.perf_counter() - started)
        return BatchResult(messages, forwarded, rejected)

    def _send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: dict[str, str | bytes | None] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=-1 if partition is None else partition,  # -1: the partitioner's
                    headers=headers,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self._tallies.beat()
                self._producer.poll(0.05)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _flush(self) -> None:
        """Wait for every acknowledgement, in 1 s slices so the watchdog sees us alive."""
        deadline = time.monotonic() + self._settings.worker_ack_timeout_seconds
        remaining = self._producer.flush(min(1.0, self._settings.worker_ack_timeout_seconds))
        while remaining and time.monotonic() < deadline:
            self._tallies.beat()
            remaining = self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        if remaining or self._failures:
            detail = self._failures[0] if self._failures else f"{remaining} unacknowledged"
            raise OperationalError(
                f"intake: Kafka at {self._settings.kafka_bootstrap} did not acknowledge the "
                f"batch's outputs within {self._settings.worker_ack_timeout_seconds:.0f} s "
                f"({detail}); the batch is not committed and will be replayed"
            )

    def close(self) -> None:
        """Give the last asynchronous commit up to 5 s to be confirmed, then leave."""
        with contextlib.suppress(KafkaException, RuntimeError):  # already closed
            deadline = time.monotonic() + 5.0
            while self.commits.unconfirmed(self._assigned()) and time.monotonic() < deadline:
                self._commit({})  # what failed meanwhile
                self._consumer.poll(0.1)  # serves on_commit; a message read here is not committed
            self._consumer.close()
