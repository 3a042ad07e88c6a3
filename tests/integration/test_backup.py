"""Issue 11, section 4: back up, drop the database, restore; nothing changed, and
counting continues exactly (the real worker, broker and ClickHouse 18.16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from consumers import figures, finalized
from consumers.backup import MANIFEST
from consumers.finalize import finalize
from hallstats.cli.demo import stop_worker
from hallstats.clickhouse import connect
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import table_names
from schemas.figures import TypeCounts
from streams.progress import wait_until_caught_up
from tests.support.events import encode, event, produce
from tests.support.services import Worker, settings_env

pytestmark = pytest.mark.integration

W50 = IsoWeek.parse("2024-W50")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hallstats.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **settings_env(settings), "COLUMNS": "400"},
        timeout=300,
    )


def send(settings: Settings, events: list[dict[str, Any]]) -> None:
    produce(settings, [(None, encode(e), None) for e in events])


def snapshot(settings: Settings) -> dict[str, Any]:
    """What must survive: every finalized version, the live figures, every table's rows."""
    db = settings.clickhouse_database
    client = connect(settings)
    try:
        tables = [
            str(r[0])
            for r in client.execute(f"SELECT name FROM system.tables WHERE database = '{db}'")
        ]
        return {
            "versions": finalized.versions(client, settings, W50),
            "weekly": figures.weekly(client, settings, W50),
            "ytd": figures.year_to_date(client, settings, W50),
            "rows": {t: client.execute(f"SELECT count() FROM {db}.{t}")[0][0] for t in tables},
            "finalized_weeks": client.execute(
                f"SELECT * FROM {db}.finalized_weeks ORDER BY week, version"
            ),
            "breakdown": client.execute(
                f"SELECT * FROM {db}.finalized_breakdown "
                "ORDER BY week, version, scope, name, event_type"
            ),
            "events": client.execute(f"SELECT * FROM {db}.events FINAL ORDER BY event_id"),
            "progress": client.execute(
                f"SELECT partition, max(next_offset) FROM {db}.progress GROUP BY partition "
                "ORDER BY partition"
            ),
        }
    finally:
        client.disconnect()


@pytest.mark.timeout(600)
def test_backup_drop_restore_then_counting_continues_exactly(
    isolated: Settings, worker: Worker, tmp_path: Path
) -> None:
    settings = isolated.model_copy(update={"auto_finalize": False})
    first = [event(t) for t in ("consult", "accept", "accept", "issue", "transfer")]
    first.append(event("accept", when="2024-11-05T09:00:00+08:00", department="商务厅"))
    first.append(event("heartbeat"))
    send(settings, first)
    proc = worker(settings)
    v1 = finalize(settings, W50, timeout=180)
    assert v1.created and v1.snapshot.version == 1
    time.sleep(7)  # the worker re-reads finalized weeks every 5 s
    late = event("transfer", when="2024-12-14T16:30:00+08:00")
    send(settings, [late])
    v2 = finalize(settings, W50, timeout=180)
    assert v2.created and v2.snapshot.version == 2
    stop_worker(proc)
    issued = cli(settings, "terminals", "add", "--hall", "hall-a", "--window", "W01")
    assert issued.returncode == 0, issued.stderr
    # Background merges of ReplacingMergeTree parts change raw row counts at any
    # time: merge now, so the counts compared below stay still.
    client = connect(settings)
    try:
        for table in table_names():
            client.execute(f"OPTIMIZE TABLE {settings.clickhouse_database}.{table} FINAL")
    finally:
        client.disconnect()

    before = snapshot(settings)
    assert [v.version for v in before["versions"]] == [1, 2]
    assert before["weekly"] == TypeCounts(consult=1, accept=2, issue=1, transfer=2)
    assert before["rows"]["events"] >= 7 and before["rows"]["late_events"] == 1
    assert before["rows"]["terminal_tokens"] == 1

    target = tmp_path / "backup"
    started = time.monotonic()
    made = cli(settings, "backup", str(target))
    backup_seconds = time.monotonic() - started
    assert made.returncode == 0, made.stderr
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    backed = {t["table"]: t["rows"] for t in manifest["tables"]}
    assert set(table_names()) <= set(backed) == set(before["rows"])
    assert backed == before["rows"]
    assert manifest["database"] == settings.clickhouse_database

    # A database that holds data is not overwritten without --force.
    refused = cli(settings, "restore", str(target))
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    # A damaged copy is refused, naming the file, before anything is touched.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in target.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    (damaged / "finalized_weeks.tsv").write_bytes(
        (damaged / "finalized_weeks.tsv").read_bytes().replace(b"2024-W50", b"2024-W51", 1)
    )
    bad = cli(settings, "restore", str(damaged), "--force")
    assert bad.returncode == 2 and "finalized_weeks.tsv" in bad.stderr, bad.stderr

    client = connect(settings)
    try:
        client.execute(f"DROP DATABASE {settings.clickhouse_database}")
    finally:
        client.disconnect()
    started = time.monotonic()
    restored = cli(settings, "restore", str(target))
    restore_seconds = time.monotonic() - started
    assert restored.returncode == 0, restored.stderr
    after = snapshot(settings)
    assert after == before
    # --force replaces tables that hold data: restoring again changes nothing.
    again = cli(settings, "restore", str(target), "--force")
    assert again.returncode == 0, again.stderr
    assert snapshot(settings) == before
    print(
        f"\nbackup {backup_seconds:.1f} s, restore {restore_seconds:.1f} s; rows per table: "
        f"{json.dumps(backed, sort_keys=True)}"
    )

    # Counting continues exactly, on a new host (no local state) and re-sends included.
    fresh = settings.model_copy(update={"worker_data_dir": tmp_path / "fresh-host"})
    worker(fresh)
    new = [event("consult"), event("issue"), event("accept", when="2024-12-11T11:00:00+08:00")]
    resent = [first[0], first[2], late, first[6]]
    send(fresh, [*new, *resent, new[0]])
    wait_until_caught_up(fresh, 180)
    v3 = finalize(fresh, W50, timeout=180)
    expected = TypeCounts(consult=2, accept=3, issue=2, transfer=2)
    assert v3.created and v3.snapshot.version == 3
    assert v3.snapshot.weekly == expected
    assert v3.snapshot.year_to_date == TypeCounts(consult=2, accept=4, issue=2, transfer=2)
    final = snapshot(fresh)
    assert final["versions"][:2] == before["versions"]
    assert len(final["events"]) == len(before["events"]) + len(new)
