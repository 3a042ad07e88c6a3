"""What the fault tests share: the events they send, the oracle, a terminal fleet,
and the exactness check after a fault (finalize 2024-W50, compare with the oracle)."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import Producer

from consumers.finalize import finalize
from hallstats.clickhouse import connect
from hallstats.kafka import ensure_topics, producer_config
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.figures import TypeCounts
from tests.support.services import free_port

WEEK = IsoWeek.parse("2024-W50")
SHANGHAI = ZoneInfo("Asia/Shanghai")
TYPES = ["consult", "accept", "issue", "transfer"]


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    """n distinct events, 80% in 2024-W50 and 20% in W49 (year-to-date only)."""
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        day = (
            rng.choice(WEEK.days()[:5])
            if rng.random() < 0.8
            else rng.choice(WEEK.previous().days()[:5])
        )
        local = datetime(
            day.year, day.month, day.day, rng.randrange(9, 17), rng.randrange(60), tzinfo=SHANGHAI
        )
        occurred = (
            local.astimezone(UTC).isoformat().replace("+00:00", "Z")
            if rng.random() < 0.5
            else local.isoformat()
        )
        events.append(
            {
                "schema_version": 1,
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "event_type": rng.choice(TYPES),
                "occurred_at": occurred,
                "hall_id": rng.choice(["hall-a", "hall-b"]),
                "window_id": f"W{rng.randrange(1, 9):02d}",
                "department": rng.choice(["民政厅", "商务厅", "药监局"]),
            }
        )
    return events


def oracle(events: list[dict[str, Any]]) -> tuple[TypeCounts, TypeCounts]:
    distinct = {e["event_id"]: e for e in events}.values()
    weekly: Counter[str] = Counter()
    ytd: Counter[str] = Counter()
    first, last = WEEK.ytd_range()
    for e in distinct:
        day = datetime.fromisoformat(e["occurred_at"]).astimezone(SHANGHAI).date()
        if WEEK.start <= day <= WEEK.end:
            weekly[e["event_type"]] += 1
        if first <= day <= last:
            ytd[e["event_type"]] += 1
    return TypeCounts.from_mapping(weekly), TypeCounts.from_mapping(ytd)


class Emitter(threading.Thread):
    """A terminal fleet: sends at a bounded rate, re-sends 10% under another key and
    partition, keeps going through broker outages (idempotent producer, long timeout)."""

    def __init__(
        self, settings: Settings, events: list[dict[str, Any]], rate: float, seed: int = 7
    ) -> None:
        super().__init__(daemon=True)
        self.settings, self.events, self.rate = settings, events, rate
        self.rng = random.Random(seed)
        self.sent = 0
        self.failures: list[str] = []

    def run(self) -> None:
        producer = Producer(
            producer_config(self.settings, message_timeout_ms=180_000, linger_ms=10, log_level=0)
        )

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self.failures.append(str(err))

        started = time.monotonic()
        for i, event in enumerate(self.events):
            body = json.dumps(event, ensure_ascii=False).encode()
            producer.produce(
                self.settings.topic, value=body, key=f"t{i % 13}".encode(), on_delivery=delivered
            )
            if self.rng.random() < 0.1:  # the same act again, another key, another partition
                producer.produce(
                    self.settings.topic,
                    value=body,
                    key=None,
                    partition=self.rng.randrange(self.settings.partitions),
                    on_delivery=delivered,
                )
            self.sent += 1
            producer.poll(0)
            ahead = self.sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        remaining = producer.flush(200)
        if remaining:
            self.failures.append(f"{remaining} undelivered")


def counted(settings: Settings) -> int:
    """Events the worker has durably counted so far (the archive; 0 before it exists)."""
    client = connect(settings)
    try:
        return int(
            client.execute(f"SELECT count() FROM {settings.clickhouse_database}.events")[0][0]
        )
    except Exception:  # no database yet
        return 0
    finally:
        client.disconnect()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_exact(settings: Settings, events: list[dict[str, Any]]) -> None:
    weekly, ytd = oracle(events)
    result = finalize(settings, WEEK, timeout=300)
    assert result.snapshot.weekly == weekly
    assert result.snapshot.year_to_date == ytd
    client = connect(settings)
    try:
        rows = client.execute(
            f"SELECT uniqExact(event_id) FROM {settings.clickhouse_database}.events"
        )
    finally:
        client.disconnect()
    assert rows[0][0] == len({e["event_id"] for e in events})
    counted = result.snapshot.year_to_date.total()
    print(f"distinct events sent {len(events)}, counted {counted} (archive {rows[0][0]})")


def own_ports(settings: Settings) -> Settings:
    return settings.model_copy(update={"worker_web_port": free_port(), "metrics_port": free_port()})


def on_services_of(isolated: Settings, stack: Settings, *names: str) -> Settings:
    """``isolated``'s own names (topics, group, database) on another stack's services
    (the settings ``names``), with the event topics made there."""
    settings = isolated.model_copy(update={name: getattr(stack, name) for name in names})
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    return settings
