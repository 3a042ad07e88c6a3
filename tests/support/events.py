"""Raw events for tests: build them, encode them, produce them as any terminal might."""

from __future__ import annotations

import json
import uuid
from typing import Any

from confluent_kafka import Producer

from hallstats.settings import Settings


def event(
    event_type: str = "accept", when: str = "2024-12-10T10:00:00+08:00", **extra: Any
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": when,
        "hall_id": "hall-a",
        "window_id": "W01",
        "department": "民政厅",
        **extra,
    }


def produce(settings: Settings, messages: list[tuple[bytes | None, bytes, int | None]]) -> None:
    """(key, value, partition or None) straight to the raw topic, as any producer might."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for key, value, partition in messages:
        if partition is None:
            producer.produce(settings.topic, value=value, key=key)
        else:
            producer.produce(settings.topic, value=value, key=key, partition=partition)
    assert producer.flush(30) == 0


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()
