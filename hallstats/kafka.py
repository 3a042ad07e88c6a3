"""The one librdkafka configuration every confluent-kafka client of hallstats starts from.

Each role adds only what makes it that role (a group, idempotence); the
connection settings live here, so a change (a new bootstrap list, later TLS)
reaches every client at once.
"""

from __future__ import annotations

import ssl
import time
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
        **security_config(settings),
    }
    config.update({k if k in _PYTHON_KEYS else k.replace("_", "."): v for k, v in extra.items()})
    return config


def security_config(settings: Settings) -> dict[str, Any]:
    """TLS and SASL for librdkafka, from the ``HALLSTATS_KAFKA_SSL_*``/``_SASL_*`` settings.

    The password goes into the client's configuration only; no one logs that dict.
    """
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol in ("SSL", "SASL_SSL"):
        config["ssl.endpoint.identification.algorithm"] = "https"  # the name must match
        if settings.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
        if settings.kafka_ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
        if settings.kafka_ssl_key_file is not None:
            config["ssl.key.location"] = str(settings.kafka_ssl_key_file)
    if protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The same TLS trust for Python clients (Faust's aiokafka); None without TLS."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ca = settings.kafka_ssl_ca_file
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    if settings.kafka_ssl_cert_file is not None:
        key = settings.kafka_ssl_key_file
        context.load_cert_chain(
            str(settings.kafka_ssl_cert_file), str(key) if key is not None else None
        )
    return context


def faust_credentials(settings: Settings) -> Any:
    """The same connection settings as Faust's ``broker_credentials`` (None: plaintext)."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings),
    )


def connect_admin(settings: Settings, timeout: float = 15.0) -> tuple[AdminClient, Any]:
    """An admin client that has talked to the cluster, and that cluster's metadata.

    A wrong password fails within a few seconds with an error naming the settings
    to check; a TLS failure that lasts until ``timeout`` says which setting to check
    (one broker restarting may fail a handshake while the others answer).
    """
    errors: list[KafkaError] = []
    admin = AdminClient(
        client_config(settings, error_cb=errors.append, socket_connection_setup_timeout_ms=5000)
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin, admin.list_topics(timeout=1.0)
        except KafkaException as exc:
            admin.poll(0.1)  # serves error_cb: list_topics itself does not
            refused = _refused_credentials(settings, errors)
            if refused is not None:  # final: another try would be refused again
                raise OperationalError(refused) from exc
            if time.monotonic() >= deadline:  # a TLS failure may be one broker restarting
                raise OperationalError(
                    _tls_failure(settings, errors)
                    or f"Kafka at {settings.kafka_bootstrap} did not answer within "
                    f"{timeout:.0f} s ({exc}); start it with `hallstats stack up`"
                ) from exc


def _refused_credentials(settings: Settings, errors: list[KafkaError]) -> str | None:
    for err in errors:
        text = str(err.str())
        if err.code() == KafkaError._AUTHENTICATION or "SASL authentication" in text:
            return (
                f"Kafka at {settings.kafka_bootstrap} ({settings.kafka_security_protocol}) "
                f"refused the credentials of user {settings.kafka_sasl_username!r} "
                f"({settings.kafka_sasl_mechanism}): check HALLSTATS_KAFKA_SASL_USERNAME and "
                f"HALLSTATS_KAFKA_SASL_PASSWORD. The broker said: {text}"
            )
    return None


def _tls_failure(settings: Settings, errors: list[KafkaError]) -> str | None:
    for err in errors:
        text = str(err.str())
        if err.code() == KafkaError._SSL or "SSL handshake" in text or "certificate" in text:
            return (
                f"Kafka at {settings.kafka_bootstrap} ({settings.kafka_security_protocol}): "
                "the TLS handshake failed: check HALLSTATS_KAFKA_SSL_CA_FILE (and "
                "HALLSTATS_KAFKA_SSL_CERT_FILE/_KEY_FILE if the brokers want a client "
                f"certificate). librdkafka said: {text}"
            )
    return None


#: confluent-kafka's own keys (callbacks and the like), passed as they are.
_PYTHON_KEYS = frozenset(
    {"log_level", "logger", "on_commit", "on_delivery", "error_cb", "stats_cb", "throttle_cb"}
)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retry after a broker hiccup never duplicates or reorders.

    Messages up to :data:`DLQ_MAX_MESSAGE_BYTES` (a dead-letter record of a large
    rejected message); other topics keep the broker's own, smaller limit.
    """
    defaults: dict[str, Any] = {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 20,
        "compression_type": "lz4",
        "message_timeout_ms": 120_000,
    }
    return client_config(
        settings,
        **{
            **defaults,
            **extra,
            # never less than a dead letter's size: every producer may dead-letter
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
    admin, metadata = connect_admin(settings)
    existing = metadata.topics
    topics = list(topics)
    configs = {**dlq_topic_configs(settings), **(configs or {})}
    if settings.dlq_topic in configs:
        configs[settings.dlq_topic] = {**DLQ_TOPIC_CONFIG, **configs[settings.dlq_topic]}
    wanted = [
        # Replication factor and min.insync.replicas: the brokers' defaults (three and
        # two on a three-node cluster, see deploy/kafka/server.properties), never the
        # count of brokers alive right now, which would make them permanent.
        NewTopic(name, num_partitions=n, replication_factor=-1, config=dict(configs.get(name, {})))
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
