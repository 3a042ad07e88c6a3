"""Issue 3: late data and versions, completeness, reconciliation, DLQ, on the real
worker, broker and ClickHouse, each test with its own topics, consumer group and
database (fixtures ``isolated`` and ``worker``). The pure week-state rule is tested
in tests/unit/test_week_state.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clickhouse_driver import Client

from consumers import bulletin, dlq, finalized
from consumers.completeness import silent_since_week_end
from consumers.finalize import finalize
from consumers.lifecycle import due_weeks, stream_time
from hallstats.clickhouse import connect
from hallstats.errors import IntegrityError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.figures import TypeCounts
from streams.progress import wait_until_caught_up
from tests.support.events import encode, event, produce
from tests.support.services import Worker, settings_env

SHANGHAI = ZoneInfo("Asia/Shanghai")
W49 = IsoWeek.parse("2024-W49")
W50 = IsoWeek.parse("2024-W50")
W50_CLOSES = datetime(2024, 12, 16, tzinfo=SHANGHAI)  # Sunday 2024-12-15 24:00 local
DAY = timedelta(days=1)


# --------------------------------------------------------------------------- helpers


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``hallstats ARGS`` in a child process configured like ``settings``."""
    return subprocess.run(
        [sys.executable, "-m", "hallstats.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        # Wide console: rich would otherwise wrap long lines at 80 columns in a pipe.
        env={**os.environ, **settings_env(settings), "COLUMNS": "400"},
        timeout=timeout,
    )


@contextmanager
def clickhouse(settings: Settings) -> Iterator[Client]:
    client = connect(settings)
    try:
        yield client
    finally:
        client.disconnect()


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def versions_of(settings: Settings, week: IsoWeek) -> list[finalized.FinalizedWeek]:
    with clickhouse(settings) as client:
        return finalized.versions(client, settings, week)


def send(settings: Settings, events: list[dict[str, Any]]) -> None:
    produce(settings, [(None, encode(e), None) for e in events])


def manual(isolated: Settings, **update: Any) -> Settings:
    """This test's settings with automatic finalization off unless asked for."""
    return isolated.model_copy(update={"auto_finalize": False, **update})


# ------------------------------------------------------------ pure: week_state


# ------------------------------------------------- late data and versioning


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_late_event_counts_is_recorded_and_finalize_issues_version_2(
    isolated: Settings, worker: Worker
) -> None:
    settings = manual(isolated)
    send(settings, [event(t) for t in ("consult", "accept", "accept", "issue", "transfer")])
    worker(settings)
    first = finalize(settings, W50, timeout=120)
    assert first.created and first.snapshot.version == 1
    v1_weekly = TypeCounts(consult=1, accept=2, issue=1, transfer=1)
    assert first.snapshot.weekly == v1_weekly and first.snapshot.year_to_date == v1_weekly
    assert first.snapshot.note == ""

    time.sleep(7)  # the worker re-reads finalized weeks every 5 s (+ margin under load)
    late = event("transfer", when="2024-12-14T16:30:00+08:00")
    send(settings, [late])
    second = finalize(settings, W50, timeout=120)  # waits for the late event itself
    assert second.created and second.snapshot.version == 2
    v2_weekly = TypeCounts(consult=1, accept=2, issue=1, transfer=2)
    assert second.snapshot.weekly == v2_weekly and second.snapshot.year_to_date == v2_weekly
    diff = {"consult": 0, "accept": 0, "issue": 0, "transfer": 1}
    assert second.snapshot.note == f"revises v1: weekly {diff}, year_to_date {diff}"
    assert second.snapshot.content_hash != first.snapshot.content_hash
    assert second.snapshot.finalized_at >= first.snapshot.finalized_at

    with clickhouse(settings) as client:
        rows = client.execute(
            "SELECT event_id, week, toString(event_type), finalized_version "
            f"FROM {settings.clickhouse_database}.late_events FINAL"
        )
    assert rows == [(late["event_id"], "2024-W50", "transfer", 1)]

    # v1 is immutable and still readable next to v2.
    stored = versions_of(settings, W50)
    assert [v.version for v in stored] == [1, 2]
    assert stored[0] == first.snapshot and stored[1] == second.snapshot

    old = cli(settings, "bulletin", "--week", "2024-W50", "--version", "1")
    assert old.returncode == 0, old.stderr
    assert old.stdout.strip() == bulletin.paragraph(v1_weekly, v1_weekly)
    assert "流转1件次" in old.stdout
    latest = cli(settings, "bulletin", "--week", "2024-W50")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.strip() == bulletin.paragraph(v2_weekly, v2_weekly)
    missing = cli(settings, "bulletin", "--week", "2024-W50", "--version", "3")
    assert missing.returncode == 2 and "3" in missing.stderr

    revisions = cli(settings, "revisions", "--week", "2024-W50")
    assert revisions.returncode == 0, revisions.stderr
    lines = revisions.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("2024-W50")] == [
        ["2024-W50", "v1"],
        ["2024-W50", "v2"],
    ]
    assert first.snapshot.content_hash[:12] in revisions.stdout
    assert second.snapshot.content_hash[:12] in revisions.stdout
    assert "revises v1" in revisions.stdout

    again = finalize(settings, W50, timeout=120)
    assert not again.created and again.snapshot == second.snapshot
    assert [v.version for v in versions_of(settings, W50)] == [1, 2]


# ------------------------------------- automatic finalization, historical replay


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_auto_finalize_follows_the_stream_not_only_the_clock(
    isolated: Settings, worker: Worker
) -> None:
    settings = isolated.model_copy(
        update={
            "auto_finalize": True,
            "finalize_check_seconds": 2,
            "finalize_grace_seconds": 86400,
        }
    )
    send(settings, [event(t, when="2024-12-04T10:00:00+08:00") for t in ("consult", "accept")])
    send(settings, [event("issue", when="2024-12-08T23:30:00+08:00")])  # W49's last hour
    worker(settings)
    wait_until_caught_up(settings, 120)
    time.sleep(10)  # several auto-finalize ticks: the clock is years past W49's grace...
    assert versions_of(settings, W49) == []  # ...but the stream is still inside W49
    with clickhouse(settings) as client:
        latest = stream_time(client, settings)
        assert latest == datetime(2024, 12, 8, 23, 30, tzinfo=SHANGHAI)
        assert due_weeks(client, settings, datetime.now(UTC)) == []

    # The replay moves on to Wednesday of W50: W49's grace (until Tuesday 00:00) passed.
    send(settings, [event(t, when="2024-12-11T09:00:00+08:00") for t in ("transfer", "accept")])
    wait_for(lambda: bool(versions_of(settings, W49)), 30, "W49 to be auto-finalized", every=2)
    (auto,) = versions_of(settings, W49)
    assert auto.version == 1
    assert auto.weekly == TypeCounts(consult=1, accept=1, issue=1, transfer=0)
    assert auto.year_to_date == auto.weekly
    time.sleep(4)  # two more ticks: still one version of W49, and W50 waits for its grace
    assert [v.version for v in versions_of(settings, W49)] == [1]
    assert versions_of(settings, W50) == []


# --------------------------------------------------------------- completeness


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_silent_terminal_makes_the_week_possibly_incomplete(
    isolated: Settings, worker: Worker
) -> None:
    settings = manual(isolated)
    a = {"hall_id": "hall-a", "window_id": "W01"}
    b = {"hall_id": "hall-b", "window_id": "W07", "department": "公安厅"}
    send(
        settings,
        [
            event("consult", **a),
            event("accept", when="2024-12-12T11:00:00+08:00", **a),
            event("issue", when="2024-12-13T15:00:00+08:00", **b),
            event("heartbeat", when="2024-12-13T17:00:00+08:00", **b),  # B's last sign
            event("heartbeat", when="2024-12-17T09:00:00+08:00", **a),  # A alive after W50
        ],
    )
    worker(settings)
    result = finalize(settings, W50, timeout=120)
    # Heartbeats never count: not in the figures, the counters or the archive.
    assert result.snapshot.weekly == TypeCounts(consult=1, accept=1, issue=1, transfer=0)
    assert result.snapshot.year_to_date == result.snapshot.weekly
    db = settings.clickhouse_database
    with clickhouse(settings) as client:
        assert client.execute(
            f"SELECT count() FROM {db}.counters WHERE event_type = 'heartbeat'"
        ) == [(0,)]
        assert client.execute(f"SELECT count() FROM {db}.events FINAL") == [(3,)]
        silent = silent_since_week_end(client, settings, W50)
    assert [(t.hall_id, t.window_id) for t in silent] == [("hall-b", "W07")]
    assert silent[0].last_seen == datetime(2024, 12, 13, 17, tzinfo=SHANGHAI)

    # The bulletin JSON says so (grace of W50 long passed on the clock).
    shown = cli(settings, "bulletin", "--week", "2024-W50", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["weekly"] == result.snapshot.weekly.as_dict()
    assert body["complete"] is False
    assert body["silent_terminals"] == [
        {"hall_id": "hall-b", "window_id": "W07", "last_seen": "2024-12-13T09:00:00+00:00"}
    ]
    # While the grace period runs on the clock, completeness is not judged yet.
    waiting = settings.model_copy(update={"finalize_grace_seconds": 100 * 365 * 86400.0})
    pending = cli(waiting, "bulletin", "--week", "2024-W50", "--format", "json")
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)["complete"] is None

    # Once B speaks again (a heartbeat after the week's end), the week is complete.
    send(settings, [event("heartbeat", when="2024-12-16T08:00:00+08:00", **b)])
    wait_until_caught_up(settings, 120)
    with clickhouse(settings) as client:
        assert silent_since_week_end(client, settings, W50) == []
    body = json.loads(cli(settings, "bulletin", "--week", "2024-W50", "--format", "json").stdout)
    assert body["complete"] is True and body["silent_terminals"] == []
    assert body["weekly"] == result.snapshot.weekly.as_dict()  # still no heartbeat counted


# ------------------------------------------------------------- reconciliation


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_reconcile_names_a_tampered_counter_and_finalize_refuses(
    isolated: Settings, worker: Worker
) -> None:
    settings = manual(isolated)
    send(settings, [event(t) for t in ("consult", "accept", "accept", "transfer")])
    worker(settings)
    first = finalize(settings, W50, timeout=120)
    assert first.created and first.snapshot.weekly.accept == 2
    ok = cli(settings, "reconcile", "--week", "2024-W50")
    assert ok.returncode == 0, ok.stderr
    assert "agree" in ok.stdout

    db = settings.clickhouse_database
    with clickhouse(settings) as client:
        rows = client.execute(
            "SELECT shard, period_start, hall_id, department, max(version) "
            f"FROM {db}.counters WHERE period_kind = 'week' AND period = '2024-W50' "
            "AND event_type = 'accept' GROUP BY shard, period_start, hall_id, department"
        )
        assert rows, "expected the worker's weekly accept counter in ClickHouse"
        shard, start, hall, department, version = rows[0]
        client.execute(
            f"INSERT INTO {db}.counters (shard, period_kind, period, period_start, hall_id, "
            "department, event_type, value, version, updated_at) VALUES",
            [
                (
                    shard,
                    "week",
                    "2024-W50",
                    start,
                    hall,
                    department,
                    "accept",
                    1000,
                    version + 10**12,
                    datetime.now(UTC).replace(microsecond=0),
                )
            ],
        )

    with pytest.raises(IntegrityError, match=r"weekly\.accept") as raised:
        finalize(settings, W50, timeout=120)
    assert "2024-W50" in str(raised.value)
    assert [v.version for v in versions_of(settings, W50)] == [1]

    bad = cli(settings, "reconcile", "--week", "2024-W50")
    assert bad.returncode == 4, (bad.stdout, bad.stderr)
    assert "weekly.accept" in bad.stderr
    assert "weekly.consult" not in bad.stderr  # only the differing counter is named
    refused = cli(settings, "finalize", "--week", "2024-W50", "--timeout", "60")
    assert refused.returncode == 4 and "weekly.accept" in refused.stderr
    assert [v.version for v in versions_of(settings, W50)] == [1]


# ------------------------------------------------------------------------ DLQ


def _raw_high_watermarks(settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(settings.topic, p), timeout=10)[1]
            for p in range(settings.partitions)
        )
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_dlq_lists_replays_exports_and_fixed_export_is_counted(
    isolated: Settings, worker: Worker, tmp_path: Path
) -> None:
    settings = manual(isolated)
    naive = event("accept", when="2024-12-10T10:00:00")
    unknown = event("approve")
    send(settings, [naive, unknown, event("consult")])
    worker(settings)
    wait_until_caught_up(settings, 120)

    listed = cli(settings, "dlq", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert sorted(letter["reason"] for letter in letters) == [
        "naive_timestamp",
        "unknown_event_type",
    ]
    for letter in letters:
        assert letter["topic"] == settings.topic
        assert 0 <= letter["partition"] < settings.partitions
        assert letter["offset"] >= 0
        rejected_at = datetime.fromisoformat(letter["rejected_at"])
        assert rejected_at.tzinfo is not None
        assert abs(datetime.now(UTC) - rejected_at) < timedelta(minutes=10)
    assert len({(x["partition"], x["offset"]) for x in letters}) == 2
    text = cli(settings, "dlq")
    assert text.returncode == 0 and "2 rejected messages" in text.stdout

    before = _raw_high_watermarks(settings)
    replayed = cli(settings, "dlq", "--replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "re-sent 0" in replayed.stdout
    assert "naive_timestamp" in replayed.stdout and "unknown_event_type" in replayed.stdout
    assert _raw_high_watermarks(settings) == before  # nothing went back to the topic

    exported = tmp_path / "dlq.jsonl"
    done = cli(settings, "dlq", "--export", str(exported))
    assert done.returncode == 0, done.stderr
    originals = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(originals, key=lambda e: e["event_id"]) == sorted(
        [naive, unknown], key=lambda e: e["event_id"]
    )

    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(
        "".join(
            json.dumps(
                {**e, "occurred_at": e["occurred_at"] + "Z"}
                if e["event_id"] == naive["event_id"]
                else e,
                ensure_ascii=False,
            )
            + "\n"
            for e in originals
        ),
        encoding="utf-8",
    )
    emitted = cli(settings, "emit", str(fixed))
    assert emitted.returncode == 0, emitted.stderr
    assert "sent 1, rejected 1" in emitted.stdout  # the unknown type is still refused
    result = finalize(settings, W50, timeout=120)
    assert result.snapshot.weekly == TypeCounts(consult=1, accept=1)
    with clickhouse(settings) as client:
        ids = client.execute(f"SELECT event_id FROM {settings.clickhouse_database}.events FINAL")
    assert naive["event_id"] in {r[0] for r in ids}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_too_old_and_future_events_are_rejected_and_the_worker_keeps_counting(
    isolated: Settings, worker: Worker
) -> None:
    settings = manual(isolated)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    old, ahead = event(when="1999-06-01T10:00:00+08:00"), event("consult", when=future)
    send(settings, [old, ahead])
    proc = worker(settings)
    wait_until_caught_up(settings, 120)
    valid = [event(t) for t in ("consult", "issue", "transfer")]
    send(settings, valid)
    result = finalize(settings, W50, timeout=120)
    assert proc.poll() is None, "the worker stopped on bad input"
    assert result.snapshot.weekly == TypeCounts(consult=1, issue=1, transfer=1)
    by_id = {}
    for letter in dlq.read(settings):
        assert letter.original is not None
        by_id[json.loads(letter.original)["event_id"]] = letter
    assert {k: v.reason for k, v in by_id.items()} == {
        old["event_id"]: "timestamp_too_old",
        ahead["event_id"]: "future_timestamp",
    }
    assert all(v.field == "occurred_at" for v in by_id.values())
