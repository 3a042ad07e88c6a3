"""Run the Faust app as a long-lived worker process (``hallstats worker``)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from faust import Worker

from hallstats.emit import ensure_topics
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
    wanted = internal_topics(settings)
    ensure_topics(
        settings,
        [(name, partitions) for name, (partitions, _config) in wanted.items()],
        {name: config for name, (_partitions, config) in wanted.items()},
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise OperationalError(
                f"Kafka at {settings.kafka_bootstrap} did not answer ({exc})"
            ) from exc
        visible = [
            n
            for n, (partitions, _c) in wanted.items()
            if n in existing and len(existing[n].partitions) >= partitions
        ]
        if len(visible) == len(wanted):
            return
        if time.monotonic() > deadline:
            raise OperationalError(
                f"Kafka at {settings.kafka_bootstrap}: topics "
                f"{sorted(set(wanted) - set(visible))} not visible after {timeout:.0f} s"
            )
        time.sleep(0.2)


def run(settings: Settings, *, loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT); Faust commits on the way out."""
    logging.getLogger("clickhouse_driver").setLevel(logging.WARNING)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    prepare_topics(settings)
    app = build_app(settings)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
