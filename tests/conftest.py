"""Session fixtures that start the real services, and per-test isolation.

Kafka and ClickHouse are started once per session through the project's own
``deploy.stack`` (the same code as ``hallstats stack up``) and stopped at the
end if this session started them. Each test gets its own topics, consumer
group and ClickHouse database, so tests never see each other's data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from hallstats.errors import OperationalError
from hallstats.settings import Settings
from tests.support.services import ROOT, Worker, free_port, settings_env

pytest_plugins = ["tests.support.promserver"]  # the real Prometheus, a session fixture

# The suite shares two cores with Kafka, ClickHouse and workers: time limits per
# example would fail on load, not on logic.
hypothesis_settings.register_profile("hallstats", deadline=None)
hypothesis_settings.load_profile("hallstats")


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real Kafka broker and ClickHouse server, ready or a clear failure."""
    from deploy import stack as local_stack

    base = Settings(stack_dir=ROOT / ".stack")
    already = all(s.running for s in local_stack.status(base))
    try:
        local_stack.up(base, progress=lambda m: print(f"stack: {m}", file=sys.stderr))
        local_stack.wait_for_kafka(base, 60)
        local_stack.wait_for_clickhouse(base, 60)
    except OperationalError as exc:
        pytest.fail(f"could not start the test services (Kafka, ClickHouse): {exc}", pytrace=False)
    yield base
    if not already and not os.environ.get("HALLSTATS_KEEP_STACK"):
        local_stack.down(base, progress=lambda m: None)


@pytest.fixture
def isolated(stack: Settings, tmp_path: Path) -> Settings:
    """Settings with this test's own topics, consumer group and database."""
    from hallstats.kafka import ensure_topics

    settings = stack.isolated(
        "hs",
        tmp_path,
        worker_web_port=free_port(),
        metrics_port=free_port(),
        worker_batch_seconds=0.2,
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    return settings


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    """Start ``hallstats worker`` processes for a test; all are stopped afterwards."""
    from hallstats.cli.demo import start_worker, stop_worker

    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, stage: str = "all") -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(procs)}.log"
        proc = start_worker(settings, log, env=settings_env(settings), stage=stage)
        procs.append(proc)
        return proc

    yield start
    # A worker that exited on its own with an error is a failure; one the test
    # killed on purpose is marked ``expected_exit`` (see tests/faults/test_faults.py).
    crashed = [
        p
        for p in procs
        if p.poll() not in (None, 0, -15) and not getattr(p, "expected_exit", False)
    ]
    for proc in procs:
        stop_worker(proc)
    for index, proc in enumerate(procs):
        if proc in crashed:
            tail = (tmp_path / f"worker-{index}.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"worker {index} exited with {proc.returncode}; log tail:\n{tail}")
