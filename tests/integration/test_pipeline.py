"""The worker on the real broker and ClickHouse: dedup across keys, DLQ, finalize, bulletin."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest
from confluent_kafka import Consumer

from consumers import finalized
from consumers.finalize import finalize
from hallstats.clickhouse import connect
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from tests.support.events import encode, event, produce
from tests.support.services import Worker, settings_env

pytestmark = pytest.mark.integration

WEEK = IsoWeek.parse("2024-W50")


def read_dlq(settings: Settings, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.app_id}-dlq-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.dlq_topic])
    found: list[dict[str, Any]] = []
    import time

    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found.append(json.loads(msg.value()))
    consumer.close()
    return found


def test_duplicates_under_different_keys_and_partitions_count_once(
    isolated: Settings, worker: Worker
) -> None:
    settings = isolated
    twice = event("consult")
    others = [event("accept"), event("issue"), event("transfer"), event("transfer")]
    messages: list[tuple[bytes | None, bytes, int | None]] = [
        (b"terminal-1", encode(twice), 0),
        (b"terminal-2", encode(twice), 1),
        (None, encode(twice), 2),
        # Same act, same instant written in UTC and the id in upper case: still one act.
        (
            b"x",
            encode(
                {
                    **twice,
                    "occurred_at": "2024-12-10T02:00:00Z",
                    "event_id": twice["event_id"].upper(),
                }
            ),
            3,
        ),
    ]
    messages += [(None, encode(e), i % settings.partitions) for i, e in enumerate(others)]
    produce(settings, messages)
    worker(settings)
    result = finalize(settings, WEEK, timeout=120)
    assert result.created and result.snapshot.version == 1
    assert result.snapshot.weekly.as_dict() == {
        "consult": 1,
        "accept": 1,
        "issue": 1,
        "transfer": 2,
    }
    assert result.snapshot.year_to_date == result.snapshot.weekly
    client = connect(settings)
    try:
        rows = client.execute(
            f"SELECT count(), uniqExact(event_id) FROM {settings.clickhouse_database}.events FINAL"
        )
        assert rows == [(5, 5)]
    finally:
        client.disconnect()
    # Sending the same messages again changes nothing: finalize finds nothing new.
    produce(settings, messages)
    again = finalize(settings, WEEK, timeout=120)
    assert not again.created and again.snapshot.version == 1


def test_invalid_messages_go_to_the_dlq_with_reason_and_bytes_never_to_counts(
    isolated: Settings, worker: Worker
) -> None:
    settings = isolated
    bad: dict[str, bytes] = {
        "invalid_json": b'{"schema_version": 1,',
        "invalid_utf8": b'{"a": "\xff"}',
        "not_an_object": b"[1]",
        "missing_field": encode({k: v for k, v in event().items() if k != "hall_id"}),
        "wrong_type": encode(event(window_id=7)),
        "unknown_event_type": encode(event("approve")),
        "naive_timestamp": encode(event(when="2024-12-10T10:00:00")),
        "invalid_timestamp": encode(event(when="10 Dec 2024")),
        "oversize_message": encode(event(case_id="x" * (settings.max_message_bytes + 1))),
        "future_timestamp": encode(event(when="2099-01-01T00:00:00Z")),
        "timestamp_too_old": encode(event(when="1999-12-31T23:00:00Z")),
    }
    good = [event("consult"), event("accept")]
    conflict_base = event("issue")
    conflict = {**conflict_base, "window_id": "W99"}
    produce(
        settings,
        [(None, raw, None) for raw in bad.values()]
        + [(None, encode(e), None) for e in [*good, conflict_base]]
        + [(b"later", encode(conflict), None)],
    )
    worker(settings)
    result = finalize(settings, WEEK, timeout=120)
    assert result.snapshot.weekly.as_dict() == {
        "consult": 1,
        "accept": 1,
        "issue": 1,
        "transfer": 0,
    }
    letters = read_dlq(settings, expected=len(bad) + 1)
    by_reason = {letter["reason"]: letter for letter in letters}
    assert set(by_reason) == {*bad, "conflicting_duplicate"}
    for reason, raw in bad.items():
        letter = by_reason[reason]
        assert base64.b64decode(letter["original_b64"]) == raw
        assert letter["source"]["topic"] == settings.topic
        assert letter["expected"] and letter["got"]
    assert by_reason["wrong_type"]["field"] == "window_id"
    assert by_reason["conflicting_duplicate"]["field"] == "event_id"


def test_bulletin_cli_text_json_and_unfinalized_week(isolated: Settings, worker: Worker) -> None:
    settings = isolated
    produce(
        settings,
        [(None, encode(event(t)), None) for t in ("consult", "accept", "issue", "transfer")],
    )
    env = {**settings_env(settings)}
    cli = [sys.executable, "-m", "hallstats.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run(
            [*cli, *args],
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=180,
        )

    missing = run("bulletin", "--week", "2024-W50")
    assert missing.returncode == 2
    assert "2024-W50" in missing.stderr and "finalize" in missing.stderr
    bad_week = run("bulletin", "--week", "2024-W60")
    assert bad_week.returncode == 2 and "2024-W60" in bad_week.stderr

    worker(settings)
    done = run("finalize", "--week", "2024-W50", "--timeout", "120")
    assert done.returncode == 0, done.stderr
    assert "version 1" in done.stdout
    text = run("bulletin", "--week", "2024-W50")
    assert text.stdout.strip() == (
        "本周，共计咨询1人次、受理1件、颁发1件、流转1件次。今年以来，累计咨询1人次、受理1件、颁发1件、流转1件次。"
    )
    body = json.loads(run("bulletin", "--week", "2024-W50", "--format", "json").stdout)
    assert body["week"] == "2024-W50" and body["version"] == 1
    assert (body["week_start"], body["week_end"]) == ("2024-12-09", "2024-12-15")
    assert body["weekly"] == {"consult": 1, "accept": 1, "issue": 1, "transfer": 1}
    assert body["year_to_date"] == body["weekly"]
    client = connect(settings)
    try:
        assert finalized.read(client, settings, WEEK).version == 1
    finally:
        client.disconnect()


def test_finalize_fails_clearly_without_a_worker(isolated: Settings) -> None:
    from hallstats.errors import OperationalError

    produce(isolated, [(None, encode(event()), None)])
    with pytest.raises(OperationalError, match="hallstats worker"):
        finalize(isolated, WEEK, timeout=3)
