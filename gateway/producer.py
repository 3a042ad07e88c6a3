"""Produce to Kafka and wait for its acknowledgement, from asyncio.

One idempotent confluent-kafka producer (acks=all, :func:`hallstats.kafka.producer_config`)
shared by all requests; a daemon thread serves its delivery callbacks and hands each
result to the waiting request's event loop. A request is answered only once every one
of its messages is acknowledged, or fails as a whole (:class:`KafkaNotAcknowledged`, or
:class:`KafkaRefused` when Kafka refused a message for good):
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


class KafkaRefused(KafkaNotAcknowledged):
    """Kafka refused a message for good (too large, invalid, not authorised): sending
    the same request again would fail the same way, so it is not a retryable 503."""


# Errors that the same message will meet again on every retry. Anything else
# (timeouts, a broker down or moving, a full queue) may heal: 503 and Retry-After.
PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
        KafkaError._INVALID_ARG,
    }
)


def permanent(err: KafkaError) -> bool:
    """Whether ``err`` will come back on every retry of the same message."""
    return bool(err.code() in PERMANENT and not err.retriable())


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


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
        self._max_bytes = int(config["message.max.bytes"])
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

        for message in messages:  # before producing any: a request fails as a whole
            size = len(message.value) + len(message.key or b"")
            if size > self._max_bytes:
                raise KafkaRefused(
                    f"Kafka at {self._settings.kafka_bootstrap}: a message of {size} bytes for "
                    f"topic {message.topic!r} is over the producer's message.max.bytes "
                    f"({self._max_bytes}): MSG_SIZE_TOO_LARGE"
                )
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
                err = _kafka_error(exc)
                kind = KafkaRefused if err is not None and permanent(err) else KafkaNotAcknowledged
                raise kind(
                    f"Kafka at {self._settings.kafka_bootstrap} refused a message of "
                    f"{len(message.value)} bytes for topic {message.topic!r}: "
                    f"{err.name() if err is not None else ''} {exc}"
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
        refused = [err for err in errors if permanent(err)]
        if refused:
            raise KafkaRefused(
                f"Kafka at {self._settings.kafka_bootstrap}: {len(errors)} of {len(futures)} "
                f"messages failed delivery; refused for good: {refused[0].name()} "
                f"({refused[0].str()})"
            )
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
