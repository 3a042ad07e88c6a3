"""Produce to Kafka and wait for its acknowledgement, from asyncio.

One idempotent confluent-kafka producer (acks=all, :func:`hallstats.kafka.producer_config`)
shared by all requests; a daemon thread serves its delivery callbacks and hands each
result to the waiting request's event loop. A request is answered only once every one
of its messages is acknowledged, or fails as a whole (:class:`KafkaNotAcknowledged`):
nothing is ever reported accepted that Kafka did not acknowledge. A message still in
flight when its request gave up may be delivered later; that is safe, because the
terminal re-sends the same event_id and the worker counts it once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from hallstats.errors import OperationalError
from hallstats.kafka import producer_config
from hallstats.settings import Settings

log = logging.getLogger(__name__)


class KafkaNotAcknowledged(OperationalError):
    """Kafka did not acknowledge a request's messages (down, slow, or refusing)."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    value: bytes
    key: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class AckProducer:
    """Send batches of messages and await Kafka's acknowledgement of all of them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # A short linger: a request waits for its acks, so batching costs latency.
        config = producer_config(settings)
        config["linger.ms"] = 5
        self._producer = Producer(config)
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-kafka", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send(self, messages: Sequence[Outgoing], timeout: float) -> float:
        """Produce ``messages`` and return once Kafka acknowledged all of them (the
        seconds it took); raise :class:`KafkaNotAcknowledged` otherwise."""
        if not messages:
            return 0.0
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        futures: list[asyncio.Future[KafkaError | None]] = []

        def settle(future: asyncio.Future[KafkaError | None], err: KafkaError | None) -> None:
            if not future.done():  # the request may have given up already
                future.set_result(err)

        for message in messages:
            future: asyncio.Future[KafkaError | None] = loop.create_future()

            def delivered(
                err: KafkaError | None,
                _msg: Message,
                future: asyncio.Future[KafkaError | None] = future,
            ) -> None:
                loop.call_soon_threadsafe(settle, future, err)

            try:
                self._producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers) or None,
                    on_delivery=delivered,
                )
            except BufferError as exc:
                raise KafkaNotAcknowledged(
                    f"Kafka at {self._settings.kafka_bootstrap}: the local send queue is "
                    "full (the broker is not taking messages)"
                ) from exc
            except KafkaException as exc:
                raise KafkaNotAcknowledged(
                    f"Kafka at {self._settings.kafka_bootstrap} refused a message: {exc}"
                ) from exc
            futures.append(future)
        done, pending = await asyncio.wait(futures, timeout=timeout)
        for future in pending:
            future.cancel()
        if pending:
            raise KafkaNotAcknowledged(
                f"Kafka at {self._settings.kafka_bootstrap}: expected acknowledgement of "
                f"{len(futures)} messages within {timeout:g} s, {len(pending)} still unacknowledged"
            )
        errors = [err for err in (f.result() for f in done) if err is not None]
        if errors:
            raise KafkaNotAcknowledged(
                f"Kafka at {self._settings.kafka_bootstrap}: {len(errors)} of {len(futures)} "
                f"messages failed delivery; first: {errors[0]}"
            )
        return time.monotonic() - started

    def ready(self, timeout: float = 2.0) -> str | None:
        """None when the broker answers a metadata request for the input topic, else why not
        (blocking: call it from a worker thread)."""
        topic = self._settings.topic
        try:
            meta = self._producer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            return f"Kafka at {self._settings.kafka_bootstrap} did not answer: {exc}"
        if meta is None or meta.error is not None:
            return f"Kafka topic {topic!r}: {meta.error if meta is not None else 'missing'}"
        return None

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        self._poller.join(timeout)
        left = self._producer.flush(timeout)
        if left:
            log.warning("gateway: %d messages still unacknowledged at shutdown", left)
