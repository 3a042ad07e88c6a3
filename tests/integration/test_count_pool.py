"""Counting in several processes (streams.count_pool) on the real ClickHouse.

The pool is driven directly with bundles, as the Faust agent hands them over,
so the test can re-deliver a batch, look at each process's state slot and kill
a process at a chosen moment. Worker-level runs (every pipeline and fault test)
use the pool too: it is the default.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from consumers.figures import weekly, year_to_date
from hallstats.clickhouse import connect
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.events import parse_event
from streams import bundles
from streams.count_pool import CountPool
from streams.count_summary import CountSummary
from streams.gaps import Fetched
from streams.lateness import FinalizedWeeks
from streams.stage_stats import StageTallies
from tests.support.faults import WEEK, make_events, oracle, wait_for
from tests.support.services import free_port

pytestmark = pytest.mark.integration


class Summaries:
    """What the worker's metrics would be told."""

    def __init__(self) -> None:
        self.total = CountSummary()

    def record(self, summary: CountSummary) -> None:
        self.total.merge(summary)


def delivered(settings: Settings, events: list[dict[str, Any]]) -> list[Fetched]:
    """The events as bundles of the by-event-id topic, 50 to a bundle, offsets from 0."""
    by_partition: dict[int, list[Any]] = {}
    for e in events:
        event = parse_event(json.dumps(e, ensure_ascii=False).encode(), max_bytes=65536)
        target = bundles.partition_for(event.event_id, settings.partitions)
        by_partition.setdefault(target, []).append(event)
    now_ms = int(time.time() * 1000)
    found = []
    for partition, mine in by_partition.items():
        for offset, start in enumerate(range(0, len(mine), 50)):
            (raw,) = bundles.pack(mine[start : start + 50], settings.zone)
            found.append(Fetched(partition, offset, None, raw, now_ms))
    return found


def pool_of(settings: Settings, summaries: Summaries) -> CountPool:
    tallies = [StageTallies("count", shared=True) for _ in range(2)]
    pool = CountPool(settings, tallies, metrics=summaries, finalized=FinalizedWeeks(settings))
    pool.start()
    pool.assign(range(settings.partitions))
    return pool


def test_two_processes_count_exactly_once_and_find_their_own_state_again(
    isolated: Settings,
) -> None:
    events = make_events(3000, seed=11)
    resent = events[:300]  # the same acts again, in later bundles
    batch = delivered(isolated, events + resent)
    summaries = Summaries()
    pool = pool_of(isolated, summaries)
    try:
        first = pool.process(batch)
    finally:
        pool.close()
    assert (first.events, first.newly_counted, first.duplicates) == (3300, 3000, 300)
    assert sum(summaries.total.accepted.values()) == 3000
    assert summaries.total.duplicates == 300
    assert sum(n for table, n, _s in summaries.total.inserts if table == "events") == 3000
    assert sum(t.value("events") for t in pool.tallies) == 3300
    client = connect(isolated)
    try:
        assert (weekly(client, isolated, WEEK), year_to_date(client, isolated, WEEK)) == oracle(
            events
        )
    finally:
        client.disconnect()
    slots = sorted(p.name for p in (isolated.worker_data_dir / "count-state").iterdir())
    assert slots == ["slot-0", "slot-1"]

    # A restarted worker: each process takes its own slot again and knows every
    # partition's position, so the whole batch delivered again adds nothing.
    again = pool_of(isolated, Summaries())
    try:
        replay = again.process(batch)
    finally:
        again.close()
    assert replay.newly_counted == 0
    client = connect(isolated)
    try:
        assert weekly(client, isolated, WEEK) == oracle(events)[0]
    finally:
        client.disconnect()


def test_a_dead_counting_process_fails_the_batch_and_names_the_process(
    isolated: Settings,
) -> None:
    batch = delivered(isolated, make_events(200, seed=12))
    pool = pool_of(isolated, Summaries())
    try:
        os.kill(pool.pids()[1], signal.SIGKILL)  # its answer never comes: EOF
        # Even with no batch for its partitions, the worker's watch sees it gone.
        wait_for(lambda: _raises(pool.check), 10, "check() to see the dead process")
        with pytest.raises(OperationalError, match=r"counting process 1 \(pid \d+\) exited"):
            pool.check()
        with pytest.raises(OperationalError, match=r"counting process 1 \(pid \d+\) exited"):
            pool.process(batch)
    finally:
        pool.close()


def _raises(action: Callable[[], object]) -> bool:
    try:
        action()
    except OperationalError:
        return True
    return False


def test_failed_clickhouse_writes_reach_the_metrics_while_the_batch_still_waits(
    isolated: Settings,
) -> None:
    """A counting process retries ClickHouse until it answers; meanwhile each failure
    reaches the parent at once, so an outage shows on /metrics while it lasts."""
    away = isolated.model_copy(
        update={"clickhouse_port": free_port(), "clickhouse_http_port": free_port()}
    )
    batch = delivered(away, make_events(50, seed=13))
    summaries = Summaries()
    pool = pool_of(away, summaries)
    waiting = threading.Thread(target=lambda: _raises(lambda: pool.process(batch)), daemon=True)
    try:
        waiting.start()
        wait_for(lambda: summaries.total.failures >= 2, 30, "failures during the outage")
        assert waiting.is_alive(), "the batch answered although nothing is durable"
    finally:
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)  # the batch fails, as the worker would exit
        waiting.join(30)
        pool.close()
