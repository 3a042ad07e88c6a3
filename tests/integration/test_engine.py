"""The engine's state on the real broker and ClickHouse: history, loss of local state.

Ownership of every event_id is kept for all history (RocksDB, checked against the
ClickHouse archive), so a re-send years later still counts once and a conflicting
duplicate years apart is still dead-lettered, also after the worker's local state
is lost and rebuilt from ClickHouse.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from hallstats.clickhouse import connect
from hallstats.kafka import consumer_config, producer_config
from hallstats.settings import Settings
from streams.progress import wait_until_caught_up
from tests.support.services import Worker

pytestmark = pytest.mark.integration


def event(when: str, department: str = "民政厅", **extra: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "event_type": "accept",
        "occurred_at": when,
        "hall_id": "hall-a",
        "window_id": "W01",
        "department": department,
        **extra,
    }


def send(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = Producer(producer_config(settings))
    for i, e in enumerate(events):
        body = json.dumps(e, ensure_ascii=False).encode()
        producer.produce(settings.topic, value=body, partition=i % settings.partitions)
    assert producer.flush(30) == 0


def year_count(settings: Settings, year: str) -> int:
    """The streaming counter of a year (argMax per shard and combo, then summed)."""
    client = connect(settings)
    try:
        rows = client.execute(
            f"""SELECT sum(v) FROM (
                SELECT argMax(value, version) AS v FROM {settings.clickhouse_database}.counters
                WHERE period_kind = 'year' AND period = %(year)s
                GROUP BY shard, hall_id, department, event_type)""",
            {"year": year},
        )
    finally:
        client.disconnect()
    return int(rows[0][0] or 0)


def conflicts(settings: Settings, event_id: str, expected: int, timeout: float = 60) -> int:
    consumer = Consumer(consumer_config(settings, f"{settings.app_id}-test-{uuid.uuid4().hex}"))
    consumer.subscribe([settings.dlq_topic])
    found = 0
    deadline = time.monotonic() + timeout
    try:
        while found < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            record = json.loads(msg.value())
            if record["reason"] == "conflicting_duplicate" and msg.key() == event_id.encode():
                found += 1
    finally:
        consumer.close()
    return found


def test_resend_years_later_counts_once_also_after_local_state_is_lost(
    isolated: Settings, worker: Worker
) -> None:
    settings = isolated
    old = event("2020-06-01T10:00:00+08:00")
    beat = event("2021-01-04T09:00:00+08:00", event_type="heartbeat")
    later = [event(f"2024-03-{d:02d}T10:00:00+08:00") for d in range(1, 29) for _ in range(50)]
    send(settings, [old, beat, *later])
    first = worker(settings)
    wait_until_caught_up(settings, 120)
    # Years of other events later: the same act re-sent (another offset spelling)...
    resent = {**old, "occurred_at": "2020-06-01T02:00:00Z"}
    # ...and the same event_id with other content: a conflict across four years.
    conflicting = {**old, "department": "商务厅"}
    send(settings, [resent, conflicting])
    wait_until_caught_up(settings, 120)
    assert year_count(settings, "2020") == 1
    assert year_count(settings, "2024") == len(later)
    assert conflicts(settings, old["event_id"], 1) == 1

    # The worker's host is lost: SIGKILL and no data folder. A new one rebuilds its
    # state from ClickHouse and still knows the 2020 owner.
    first.expected_exit = True  # type: ignore[attr-defined]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    shutil.rmtree(settings.worker_data_dir, ignore_errors=True)
    worker(settings)
    # A counted event reusing the heartbeat's id conflicts, as it would have before.
    reused = {**beat, "event_type": "accept"}
    send(settings, [resent, conflicting, reused, event("2024-12-10T10:00:00+08:00")])
    wait_until_caught_up(settings, 120)
    assert year_count(settings, "2020") == 1
    assert year_count(settings, "2021") == 0
    assert year_count(settings, "2024") == len(later) + 1
    assert conflicts(settings, old["event_id"], 2) == 2
    assert conflicts(settings, beat["event_id"], 1) == 1
    client = connect(settings)
    try:
        archived = client.execute(
            f"SELECT count() FROM {settings.clickhouse_database}.events FINAL "
            "WHERE event_id = %(id)s",
            {"id": old["event_id"]},
        )
    finally:
        client.disconnect()
    assert archived == [(1,)]


def test_worker_refuses_another_partition_count_once_routing_exists(isolated: Settings) -> None:
    from hallstats.errors import OperationalError
    from streams.worker import prepare_topics

    prepare_topics(isolated)
    changed = isolated.model_copy(update={"partitions": isolated.partitions + 2})
    with pytest.raises(OperationalError, match=f"HALLSTATS_PARTITIONS={isolated.partitions}"):
        prepare_topics(changed)
