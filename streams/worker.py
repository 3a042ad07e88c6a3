"""Run the Faust app as a long-lived worker process (``hallstats worker``)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from faust import Worker

from hallstats.errors import OperationalError
from hallstats.settings import Settings
from streams.app import build_app

log = logging.getLogger(__name__)


def internal_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Topics the worker needs, with partitions and config, named as Faust names them."""
    compact = {"cleanup.policy": "compact"}
    return {
        settings.topic: (settings.partitions, {}),
        settings.dlq_topic: (1, {}),
        settings.by_id_topic: (settings.partitions, {}),
        f"{settings.app_id}-owners-changelog": (settings.partitions, compact),
        f"{settings.app_id}-counters-changelog": (settings.partitions, compact),
        f"{settings.app_id}-__assignor-__leader": (1, {}),
    }


def prepare_topics(settings: Settings, timeout: float = 60.0) -> None:
    """Create the worker's topics and wait until the broker's metadata shows them.

    Faust creates internal topics itself, but a topic created a moment before
    the group's first assignment can be missing from the leader's metadata and
    is then silently left unassigned (the count stage would never run).
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    wanted = internal_topics(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise OperationalError(
                f"Kafka at {settings.kafka_bootstrap} did not answer ({exc}); "
                "start it with `hallstats stack up`"
            ) from exc
        missing = {n: spec for n, spec in wanted.items() if n not in existing}
        ready = all(
            len(existing[n].partitions) >= spec[0] for n, spec in wanted.items() if n in existing
        )
        if not missing and ready:
            return
        if time.monotonic() > deadline:
            raise OperationalError(
                f"Kafka at {settings.kafka_bootstrap}: topics {sorted(missing)} not visible "
                f"after {timeout:.0f} s"
            )
        new = [
            NewTopic(n, num_partitions=p, replication_factor=1, config=c)
            for n, (p, c) in missing.items()
        ]
        for name, future in admin.create_topics(new, request_timeout=15).items() if new else []:
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise OperationalError(f"cannot create topic {name!r}: {exc}") from exc
        time.sleep(0.2)


def run(settings: Settings, *, loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT); Faust commits on the way out."""
    logging.getLogger("clickhouse_driver").setLevel(logging.WARNING)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    prepare_topics(settings)
    app = build_app(settings)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
