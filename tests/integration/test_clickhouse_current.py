"""Every statement hallstats sends to ClickHouse also runs on ClickHouse 26 (chdb),
with the same results as on the 18.16 server for the same data.

The SQL lives in many readers, so the list of statements is not written by hand:
a realistic run (worker, finalize twice, a late event, bulletin in every text
format, revisions, reconcile, status, the API, terminal tokens, backup and
restore, and a worker that lost its local state) records what it sends
(``HALLSTATS_CLICKHOUSE_STATEMENT_LOG``). Then the 18.16 database is copied into
chdb and each statement runs on both:

- reads of the project's data must give the same rows (order ignored: only an
  ``ORDER BY`` fixes one, and both servers are free to pick any);
- reads of the server itself (``version()``, ``system.*``, ``SHOW CREATE``) and
  every write and DDL must run without error on 26, in the order they were sent.

Copying the database moves every table through TabSeparated from 18.16 into 26,
which is also the format of the worker's bulk inserts and of backups.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from chdb import session as chdb_session
from fastapi.testclient import TestClient

from consumers.api.app import create_app
from gateway.auth import TokenStore
from hallstats.settings import Settings
from tests.support.events import encode, event, produce
from tests.support.services import Worker, settings_env

pytestmark = pytest.mark.integration

HALLS = ("hall-a", "hall-b")
DEPARTMENTS = ("民政厅", "公安厅", "人社厅")
TYPES = ("consult", "accept", "issue", "transfer")
SERVER_READ = re.compile(r"version\(\)|\bsystem\.|^SHOW\b", re.IGNORECASE)
API_PATHS = (
    "/health",
    "/weeks/2024-W50",
    "/weeks/2024-W50/revisions",
    "/weeks/2024-W50/departments",
    "/weeks/2024-W50/halls",
    "/weeks/2024-W49",
    "/years/2024/weeks",
    "/live/current",
)
READ = re.compile(r"^\s*(SELECT|WITH|SHOW|EXISTS|DESCRIBE)\b", re.IGNORECASE)


def cli(settings: Settings, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "hallstats.cli", *args],
        env={**settings_env(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode in ok, f"hallstats {' '.join(args)}: {run.returncode}\n{run.stderr}"
    return run.stdout


def week_events(n: int, when: str = "2024-12-1{d}T{h:02d}:00:00+08:00") -> list[bytes]:
    out = []
    for i in range(n):
        moment = when.format(d=i % 5, h=8 + i % 9)
        out.append(
            encode(
                event(
                    TYPES[i % 4],
                    moment,
                    hall_id=HALLS[i % 2],
                    department=DEPARTMENTS[i % 3],
                    window_id=f"W{i % 4:02d}",
                )
            )
        )
    return out


def exercise(settings: Settings, worker: Worker, tmp_path: Path) -> None:
    """What an operator's week does, every reader included."""
    proc = worker(settings)
    raw = [*week_events(400), b"{not json", encode(event(when="2024-12-03T09:00:00+08:00"))]
    produce(settings, [(None, body, None) for body in raw + raw[:20]])  # 20 re-sends
    cli(settings, "finalize", "--week", "2024-W50", "--timeout", "300")
    produce(settings, [(None, encode(event("issue", "2024-12-12T10:00:00+08:00")), None)])
    cli(settings, "finalize", "--week", "2024-W50", "--timeout", "300")  # version 2
    for fmt in ("paragraph", "json", "text", "markdown"):
        cli(settings, "bulletin", "--week", "2024-W50", "--format", fmt)
    cli(
        settings,
        "bulletin",
        "--week",
        "2024-W50",
        "--format",
        "docx",
        "--output",
        str(tmp_path / "w50.docx"),
    )
    cli(settings, "bulletin", "--week", "2024-W49", ok=(2,))
    cli(settings, "revisions", "--week", "2024-W50")
    cli(settings, "reconcile", "--week", "2024-W50")
    cli(
        settings,
        "status",
        "--once",
        "--url",
        f"http://127.0.0.1:{settings.metrics_port}/metrics",
        ok=(0, 3),
    )
    token = cli(settings, "terminals", "add", "--hall", "hall-a", "--window", "W09").split()[-1]
    store = TokenStore(settings)  # what the gateway asks on every request
    assert store.lookup(token) is not None
    store.close()
    cli(settings, "terminals", "list")
    cli(settings, "terminals", "revoke", "--hall", "hall-a", "--window", "W09")
    with TestClient(create_app(settings)) as api:
        for path in API_PATHS:
            assert api.get(path).status_code in (200, 404), path
    backup = tmp_path / "backup"
    cli(settings, "backup", str(backup))
    cli(settings, "restore", str(backup), "--force")
    # A worker that lost its local state rebuilds it from the archive.
    proc.terminate()
    proc.wait(60)
    for path in sorted(settings.worker_data_dir.glob("*")):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    proc = worker(settings)
    produce(
        settings,
        [(None, raw[5], None), (None, encode(event(when="2024-12-13T11:00:00+08:00")), None)],
    )
    cli(settings, "finalize", "--week", "2024-W50", "--timeout", "300")  # version 3
    proc.terminate()
    proc.wait(60)


def statements(folder: Path) -> list[list[str]]:
    """What each process sent, in its order (one file per process, oldest first)."""
    return [
        [json.loads(line)["sql"] for line in path.read_text(encoding="utf-8").splitlines()]
        for path in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    ]


def http_tsv(settings: Settings, sql: str, *, post: bool = False) -> str:
    url = f"http://127.0.0.1:{settings.clickhouse_http_port}/?" + urllib.parse.urlencode(
        {"query": sql}
    )
    with urllib.request.urlopen(url, data=b"" if post else None, timeout=60) as answer:
        return str(answer.read().decode())


def as_tsv(sql: str) -> str:
    return sql if re.search(r"\bFORMAT\s+\w+\s*$", sql) else f"{sql}\nFORMAT TabSeparated"


def with_a_row(sql: str) -> str:
    """A bulk insert's rows are not logged: it inserts a copy of a row of its table
    (the TabSeparated format itself is checked by copying the database)."""
    bulk = re.fullmatch(r"INSERT INTO (\S+) \(([^)]*)\) FORMAT TabSeparated", sql.strip())
    if bulk is None:
        return sql
    table, columns = bulk.groups()
    return f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} LIMIT 1"


def copy_database(settings: Settings, chdb: chdb_session.Session, ddl: list[str]) -> list[str]:
    db = settings.clickhouse_database
    for statement in ddl:
        chdb.query(statement)
    tables = http_tsv(settings, f"SELECT name FROM system.tables WHERE database = '{db}'").split()
    for table in tables:
        # Merged first, and copied as it is: reads of physical rows (a backup's dump,
        # count()) then see the same rows on both, whatever merges ran when.
        http_tsv(settings, f"OPTIMIZE TABLE {db}.{table} FINAL", post=True)
        rows = http_tsv(settings, f"SELECT * FROM {db}.{table} FORMAT TabSeparated")
        if rows:
            chdb.query(
                f"INSERT INTO {db}.{table} SETTINGS optimize_on_insert = 0 "
                f"FORMAT TabSeparated\n{rows}"
            )
    return tables


def test_every_statement_runs_on_clickhouse_26_with_equal_results(
    isolated: Settings, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "statements"
    settings = isolated.model_copy(update={"clickhouse_statement_log": log})
    exercise(settings, worker, tmp_path)
    per_process = statements(log)
    sent = list(dict.fromkeys(s for process in per_process for s in process))
    ddl = [s for s in sent if re.match(r"\s*CREATE\b", s, re.IGNORECASE)]
    reads = [s for s in sent if READ.match(s)]
    assert len(ddl) >= 9 and len(reads) >= 20, (len(ddl), len(reads))

    chdb = chdb_session.Session(str(tmp_path / "chdb"))
    assert chdb.query("SELECT version()", "TabSeparated").bytes().decode().startswith("26.")
    tables = copy_database(settings, chdb, [s for s in ddl if "FORMAT" not in s])
    assert "events" in tables and "finalized_weeks" in tables

    differences, compared = [], 0
    for sql in reads:
        on_26 = str(chdb.query(as_tsv(sql), "TabSeparated").bytes().decode())
        if SERVER_READ.search(sql):
            continue  # about the server, not the data: running is what counts
        on_18 = http_tsv(settings, as_tsv(sql))
        compared += 1
        if sorted(on_18.splitlines()) != sorted(on_26.splitlines()):
            differences.append(f"{sql}\n  18.16: {on_18[:300]!r}\n  26:    {on_26[:300]!r}")
    assert not differences, "\n\n".join(differences)
    assert compared >= 20

    writes = 0
    for process in per_process:  # each in its order: a restore drops, then re-creates
        for sql in (s for i, s in enumerate(process) if i == 0 or s != process[i - 1]):
            if not READ.match(sql):
                chdb.query(with_a_row(sql))
                writes += 1
    print(f"{len(sent)} distinct statements: {compared} reads compared, {writes} writes run")
    chdb.close()
