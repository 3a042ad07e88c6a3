"""The one librdkafka configuration every confluent-kafka client of hallstats starts from.

Each role adds only what makes it that role (a group, idempotence); the
connection settings live here, so a change (a new bootstrap list, later TLS)
reaches every client at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from hallstats.errors import OperationalError
from hallstats.settings import Settings


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Connection settings shared by every client, plus role-specific ``extra``.

    Keys use librdkafka's dotted names; pass them with underscores for dots,
    e.g. ``group_id="x"`` becomes ``group.id``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "log_level": 3,  # librdkafka warnings ("coordinator load in progress") are noise
    }
    config.update({k.replace("_", ".") if k != "log_level" else k: v for k, v in extra.items()})
    return config


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retry after a broker hiccup never duplicates or reorders."""
    return client_config(
        settings,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        compression_type="lz4",
        message_timeout_ms=120_000,
        **extra,
    )


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """A group member that commits by hand, only after its outputs are durable."""
    return client_config(
        settings,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **extra,
    )


def ensure_topics(
    settings: Settings,
    topics: Iterable[tuple[str, int]],
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create topics that are missing (idempotent; others' settings are left alone).

    ``configs`` gives topic configs by name (e.g. compaction for changelogs).
    """
    admin = AdminClient(client_config(settings))
    try:
        existing = admin.list_topics(timeout=15).topics
    except KafkaException as exc:
        raise OperationalError(
            f"Kafka at {settings.kafka_bootstrap} did not answer ({exc}); "
            "start it with `hallstats stack up`"
        ) from exc
    wanted = [
        NewTopic(
            name, num_partitions=n, replication_factor=1, config=dict((configs or {}).get(name, {}))
        )
        for name, n in topics
    ]
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, request_timeout=15).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise OperationalError(f"cannot create topic {topic!r}: {exc}") from exc
