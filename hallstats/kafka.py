"""The one librdkafka configuration every confluent-kafka client of hallstats starts from.

Each role adds only what makes it that role (a group, idempotence); the
connection settings live here, so a change (a new bootstrap list, later TLS)
reaches every client at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, not re-exported
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from hallstats.errors import OperationalError
from hallstats.settings import Settings

# A dead-letter record carries a rejected message's bytes in base64 (4/3 of them) plus
# its reason: a rejected message near the broker's 1 MB default, or a gateway event
# near the 1 MiB body limit, makes a record over 1 MB. The DLQ topic and every
# producer take records up to this size, so rejecting never fails for size.
DLQ_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
DLQ_TOPIC_CONFIG: Mapping[str, str] = {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}


def dlq_topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The topic configs of the DLQ, as :func:`ensure_topics` takes them."""
    return {settings.dlq_topic: dict(DLQ_TOPIC_CONFIG)}


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Connection settings shared by every client, plus role-specific ``extra``.

    Keys use librdkafka's dotted names; pass them with underscores for dots,
    e.g. ``group_id="x"`` becomes ``group.id``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "log_level": 3,  # librdkafka warnings ("coordinator load in progress") are noise
    }
    config.update({k if k in _PYTHON_KEYS else k.replace("_", "."): v for k, v in extra.items()})
    return config


#: confluent-kafka's own keys (callbacks and the like), passed as they are.
_PYTHON_KEYS = frozenset(
    {"log_level", "logger", "on_commit", "on_delivery", "error_cb", "stats_cb", "throttle_cb"}
)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retry after a broker hiccup never duplicates or reorders.

    Messages up to :data:`DLQ_MAX_MESSAGE_BYTES` (a dead-letter record of a large
    rejected message); other topics keep the broker's own, smaller limit.
    """
    return client_config(
        settings,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        compression_type="lz4",
        message_timeout_ms=120_000,
        # never less than a dead letter's size: every producer may dead-letter
        **{
            **extra,
            "message_max_bytes": max(DLQ_MAX_MESSAGE_BYTES, extra.get("message_max_bytes", 0)),
        },
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
    """Create topics that are missing (idempotent), and make ``configs`` hold.

    ``configs`` gives topic configs by name (e.g. compaction for changelogs, the
    DLQ's record size): a new topic is created with them, and a topic that already
    exists gets them set (other settings of it are left alone), so a topic created
    by an older version is upgraded. The DLQ (``settings.dlq_topic``) always gets
    :data:`DLQ_TOPIC_CONFIG`, whoever creates it.
    """
    admin = AdminClient(client_config(settings))
    try:
        existing = admin.list_topics(timeout=15).topics
    except KafkaException as exc:
        raise OperationalError(
            f"Kafka at {settings.kafka_bootstrap} did not answer ({exc}); "
            "start it with `hallstats stack up`"
        ) from exc
    topics = list(topics)
    configs = {**dlq_topic_configs(settings), **(configs or {})}
    if settings.dlq_topic in configs:
        configs[settings.dlq_topic] = {**DLQ_TOPIC_CONFIG, **configs[settings.dlq_topic]}
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=1, config=dict(configs.get(name, {})))
        for name, n in topics
    ]
    missing = [t for t in wanted if t.topic not in existing]
    if missing:
        for topic, future in admin.create_topics(missing, request_timeout=15).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise OperationalError(f"cannot create topic {topic!r}: {exc}") from exc
    created = {t.topic for t in missing}
    set_topic_configs(
        admin,
        {
            name: config
            for name, config in configs.items()
            if config and name not in created and name in {t.topic for t in wanted}
        },
    )


def set_topic_configs(admin: AdminClient, configs: Mapping[str, Mapping[str, str]]) -> None:
    """Set ``configs`` on existing topics (incremental: other settings stay)."""
    if not configs:
        return
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in config.items()
            ],
        )
        for name, config in configs.items()
    ]
    for resource, future in admin.incremental_alter_configs(resources, request_timeout=15).items():
        try:
            future.result()
        except KafkaException as exc:
            raise OperationalError(
                f"cannot set the configs of topic {resource.name!r}: {exc}"
            ) from exc
