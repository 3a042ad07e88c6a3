"""Exactly once under faults, on the real broker, worker and ClickHouse.

Each scenario streams distinct events (plus re-sends under other keys and
partitions) while something breaks, then finalizes 2024-W50 and compares with
the oracle: the set of distinct event_ids sent. Loopback only, bounded in count
and time; every test stops what it started.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from consumers.finalize import finalize
from deploy import stack as local_stack
from hallstats.settings import Settings
from tests.support.faults import (
    WEEK,
    Emitter,
    assert_exact,
    counted,
    make_events,
    on_services_of,
    own_ports,
    wait_for,
)
from tests.support.services import Worker

pytestmark = [pytest.mark.integration, pytest.mark.faults]


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
    return on_services_of(
        isolated,
        private_stack,
        "kafka_bootstrap",
        "clickhouse_port",
        "clickhouse_http_port",
        "stack_dir",
    )


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
