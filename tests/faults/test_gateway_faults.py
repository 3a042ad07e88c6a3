"""Exactly once through the front-desk path under faults: client -> gateway -> Kafka -> worker.

Simulated terminals (each a real offline-safe client with its SQLite spool) send to
the real gateway over loopback HTTP while the broker is stopped, or while the
gateway is killed with SIGKILL mid-request. The oracle is what the terminals
created: every event dated in 2024-W50, so the finalized week and its year-to-date
must both equal the created events per type, and the archive must hold each
created event_id once. Bounded in count and time; every test stops what it started.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.finalize import finalize
from deploy import stack as local_stack
from gateway import TokenStore
from hallstats.clickhouse import connect
from hallstats.kafka import ensure_topics
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import ensure_schema
from schemas.figures import TypeCounts
from terminals.sim import SimReport, SimTerminal, run_terminals
from tests.support.faults import wait_for
from tests.support.gateway import Gateway, start_gateway
from tests.support.services import Worker
from tests.support.supervise import supervised

pytestmark = [pytest.mark.integration, pytest.mark.faults]

WEEK = IsoWeek.parse("2024-W50")
PRIVATE_KAFKA = "127.0.0.1:29192"  # controller on 29193; not test_faults.py's broker


@pytest.fixture(scope="module")
def private_kafka(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker of this module's own (the shared ClickHouse stays): stopping it hurts no
    other test."""
    base = stack.model_copy(
        update={
            "stack_dir": tmp_path_factory.mktemp("gateway-kafka"),
            "kafka_bootstrap": PRIVATE_KAFKA,
        }
    )
    local_stack.start_kafka(base, progress=lambda m: None)
    local_stack.wait_for_kafka(base, 90)
    yield base
    local_stack.stop_kafka(base, progress=lambda m: None)


def gateway_settings(settings: Settings) -> Settings:
    """503 after 3 s without Kafka's acknowledgement; a rate limit the fleet stays under
    (429 has its own tests), so the faults are the only thing being exercised."""
    return settings.model_copy(
        update={
            "gateway_ack_timeout_seconds": 3.0,
            "gateway_rate_per_second": 2000.0,
            "gateway_burst": 5000,
        }
    )


def fleet(settings: Settings, n: int) -> list[SimTerminal]:
    ensure_schema(settings)
    store = TokenStore(settings)
    try:
        return [
            SimTerminal(f"hall-{i % 2}", f"W{i:02d}", store.add(f"hall-{i % 2}", f"W{i:02d}"))
            for i in range(n)
        ]
    finally:
        store.close()


class Fleet(threading.Thread):
    """``run_terminals`` in the background; ``report`` once it returns."""

    def __init__(self, url: str, terminals: list[SimTerminal], spools: Path, **kw: object):
        super().__init__(daemon=True)
        self.args = (url, terminals, spools)
        self.kw = kw
        self.report: SimReport | None = None

    def run(self) -> None:
        self.report = run_terminals(*self.args, week=WEEK, seed=11, **self.kw)  # type: ignore[arg-type]

    def result(self, timeout: float) -> SimReport:
        self.join(timeout)
        assert self.report is not None, "the simulated terminals did not finish"
        return self.report


def archived(settings: Settings) -> tuple[int, int]:
    """(rows, distinct event_ids) in the worker's event archive; (0, 0) before it exists."""
    client = connect(settings)
    try:
        rows = client.execute(
            f"SELECT count(), uniqExact(event_id) FROM {settings.clickhouse_database}.events"
        )
        return int(rows[0][0]), int(rows[0][1])
    except Exception:  # no table yet
        return 0, 0
    finally:
        client.disconnect()


def assert_exact(settings: Settings, report: SimReport) -> None:
    """Nothing lost, nothing doubled: the finalized figures are what the terminals made."""
    assert not report.failures, report.failures
    assert report.pending == 0 and report.rejected == 0, report.summary()
    assert report.accepted == report.created
    created = TypeCounts.from_mapping(report.by_type)
    result = finalize(settings, WEEK, timeout=300)
    assert result.snapshot.weekly == created
    assert result.snapshot.year_to_date == created
    _rows, distinct = archived(settings)
    assert distinct == report.created
    print(
        f"terminals created {report.created}, counted {result.snapshot.weekly.total()} "
        f"(archive {distinct} distinct); {report.summary()}"
    )


def test_kafka_down_terminals_spool_and_nothing_is_lost_or_doubled(
    isolated: Settings, private_kafka: Settings, worker: Worker, tmp_path: Path
) -> None:
    settings = gateway_settings(
        isolated.model_copy(
            update={
                "kafka_bootstrap": private_kafka.kafka_bootstrap,
                "stack_dir": private_kafka.stack_dir,
            }
        )
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    gw = start_gateway(settings, tmp_path / "gateway.log")
    try:
        with supervised(worker, settings) as workers:
            terminals = fleet(settings, 8)
            sim = Fleet(gw.url, terminals, tmp_path / "spools", events=450, rate=15, time_limit=240)
            sim.start()
            wait_for(lambda: archived(settings)[1] > 200, 120, "the worker to count part of it")
            local_stack.stop_kafka(settings, progress=lambda m: None)
            try:
                outage = time.monotonic()
                time.sleep(12)  # the terminals record on: about 1,400 events spooled
            finally:
                local_stack.start_kafka(settings, progress=lambda m: None)
                local_stack.wait_for_kafka(settings, 90)
            print(f"broker down for {time.monotonic() - outage:.0f} s")
            report = sim.result(300)
            assert report.statuses.get(503, 0) > 0, f"the gateway never answered 503: {report}"
            assert_exact(settings, report)
            print(f"worker processes used: {len(workers)}")
    finally:
        gw.stop()


def test_gateway_killed_mid_request_terminals_resend(
    isolated: Settings, worker: Worker, tmp_path: Path
) -> None:
    settings = gateway_settings(isolated)
    log = tmp_path / "gateway.log"
    gw: Gateway = start_gateway(settings, log)
    port = int(gw.url.rsplit(":", 1)[1])
    worker(settings)
    try:
        terminals = fleet(settings, 8)
        sim = Fleet(gw.url, terminals, tmp_path / "spools", events=400, rate=20, time_limit=240)
        sim.start()
        kills = 0
        for threshold in (300, 1200):

            def enough(t: int = threshold) -> bool:
                return archived(settings)[1] > t

            wait_for(enough, 120, f"{threshold} counted events")
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(10)
            kills += 1
            time.sleep(2)  # terminals find nobody: connection refused, backoff, spool
            gw = start_gateway(settings, log, port=port)
        report = sim.result(300)
        assert report.network_errors > 0, "the kills should have cost some requests"
        assert_exact(settings, report)
        print(f"gateway killed {kills} times with SIGKILL")
    finally:
        gw.stop()
