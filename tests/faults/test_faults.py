"""Exactly once under faults, on the real broker, worker and ClickHouse.

Each scenario streams distinct events (plus re-sends under other keys and
partitions) while something breaks, then finalizes 2024-W50 and compares with
the oracle: the set of distinct event_ids sent. Loopback only, bounded in count
and time; every test stops what it started.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import Producer

from consumers.finalize import finalize
from deploy import stack as local_stack
from hallstats.clickhouse import connect
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.figures import TypeCounts
from tests.support.services import Worker, free_port

pytestmark = [pytest.mark.integration, pytest.mark.faults]

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
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": 180_000,
                "linger.ms": 10,
                "log_level": 0,
            }
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


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker and ClickHouse of this module's own, so outages hurt no other test."""
    base = Settings(
        stack_dir=tmp_path_factory.mktemp("private-stack"),
        kafka_bootstrap="127.0.0.1:29092",
        clickhouse_port=29000,
        clickhouse_http_port=28123,
    )
    local_stack.up(base, progress=lambda m: None)
    yield base
    local_stack.down(base, progress=lambda m: None)


@pytest.fixture
def isolated_private(private_stack: Settings, isolated: Settings) -> Settings:
    """``isolated``'s names on the private stack."""
    from hallstats.kafka import ensure_topics

    settings = isolated.model_copy(
        update={
            "kafka_bootstrap": private_stack.kafka_bootstrap,
            "clickhouse_port": private_stack.clickhouse_port,
            "clickhouse_http_port": private_stack.clickhouse_http_port,
            "stack_dir": private_stack.stack_dir,
        }
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    return settings


@pytest.fixture
def supervised(worker: Worker) -> Iterator[Callable[[Settings], list[subprocess.Popen[bytes]]]]:
    """Like systemd's Restart=always: a worker that dies is started again."""
    stop = threading.Event()
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> list[subprocess.Popen[bytes]]:
        procs.append(worker(settings))

        def watch() -> None:
            while not stop.is_set():
                if procs[-1].poll() is not None:
                    procs.append(worker(settings))
                time.sleep(0.5)

        threading.Thread(target=watch, daemon=True).start()
        return procs

    yield start
    stop.set()


@pytest.mark.parametrize("host_lost", [False, True], ids=["same-host", "host-lost"])
def test_worker_killed_with_sigkill_mid_stream(
    isolated: Settings, worker: Worker, host_lost: bool
) -> None:
    """host-lost: the data folder is gone too (a new host), so the state comes back
    from ClickHouse instead of the local RocksDB."""
    events = make_events(20_000 if not host_lost else 12_000, seed=1 if not host_lost else 6)
    emitter = Emitter(isolated, events, rate=4000)
    first = worker(isolated)
    emitter.start()
    wait_for(lambda: counted(isolated) > 1000, 120, "the worker to count part of the stream")
    first.expected_exit = True  # type: ignore[attr-defined]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    if host_lost:
        shutil.rmtree(isolated.worker_data_dir, ignore_errors=True)
    emitter.join(120)
    assert not emitter.failures
    worker(isolated)
    assert_exact(isolated, events)


def test_rebalance_one_of_two_workers_stops_and_a_third_joins(
    isolated: Settings, worker: Worker
) -> None:
    events = make_events(20_000, seed=2)
    emitter = Emitter(isolated, events, rate=3000)
    a = worker(own_ports(isolated))
    worker(own_ports(isolated))
    emitter.start()
    wait_for(lambda: counted(isolated) > 1000, 120, "two workers to count part of the stream")
    a.send_signal(signal.SIGTERM)
    a.wait(60)
    time.sleep(2)
    worker(own_ports(isolated))
    emitter.join(120)
    assert not emitter.failures
    assert_exact(isolated, events)


def test_two_processes_of_each_stage(isolated: Settings, worker: Worker) -> None:
    """Scale-out: two intake and two counting processes share the partitions."""
    events = make_events(16_000, seed=8)
    emitter = Emitter(isolated, events, rate=4000)
    for stage in ("intake", "intake", "count", "count"):
        worker(own_ports(isolated), stage)
    emitter.start()
    emitter.join(120)
    assert not emitter.failures
    assert_exact(isolated, events)


def test_broker_stopped_and_restarted_while_terminals_emit(
    isolated_private: Settings, supervised: Callable[[Settings], list[subprocess.Popen[bytes]]]
) -> None:
    isolated = isolated_private
    events = make_events(15_000, seed=3)
    emitter = Emitter(isolated, events, rate=1500)
    procs = supervised(isolated)
    emitter.start()
    wait_for(lambda: counted(isolated) > 250, 120, "the worker to count part of the stream")
    local_stack.stop_kafka(isolated)
    time.sleep(5)
    local_stack.start_kafka(isolated)
    local_stack.wait_for_kafka(isolated, 60)
    emitter.join(240)
    assert not emitter.failures
    assert_exact(isolated, events)
    print(f"worker processes used: {len(procs)}")


def test_clickhouse_unreachable_for_a_minute(isolated_private: Settings, worker: Worker) -> None:
    isolated = isolated_private
    events = make_events(12_000, seed=4)
    emitter = Emitter(isolated, events, rate=150)  # steady traffic for ~80 s
    worker(isolated)
    emitter.start()
    wait_for(lambda: counted(isolated) > 250, 120, "the worker to count part of the stream")
    local_stack.stop_clickhouse(isolated)
    try:
        sent_before = emitter.sent
        outage_started = time.monotonic()
        time.sleep(60)
        sent_during = emitter.sent - sent_before
    finally:
        local_stack.start_clickhouse(isolated)
        local_stack.wait_for_clickhouse(isolated, 60)
    assert time.monotonic() - outage_started >= 60
    assert sent_during > 1000, "terminals should keep emitting during the outage"
    emitter.join(120)
    assert not emitter.failures
    assert_exact(isolated, events)


def test_resend_after_restart_under_other_keys_changes_nothing(
    isolated: Settings, worker: Worker
) -> None:
    events = make_events(2_000, seed=5)
    emitter = Emitter(isolated, events, rate=5000)
    first = worker(isolated)
    emitter.start()
    emitter.join(60)
    assert_exact(isolated, events)
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    # Later, after a restart (state comes back from the changelogs), the terminals
    # send everything again under other keys and partitions.
    worker(isolated)
    again = Emitter(isolated, list(reversed(events)), rate=5000, seed=99)
    again.start()
    again.join(60)
    result = finalize(isolated, WEEK, timeout=300)
    assert not result.created and result.snapshot.version == 1
