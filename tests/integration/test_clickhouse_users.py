"""ClickHouse with passwords and least privilege, on a server of this module's own.

Its users come from deploy/clickhouse/hallstats-users.xml, the file production
installs: a writer (worker, finalize, backup) and a read-only reader (API,
bulletin, revisions, reconcile, status), both limited to hallstats' database.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from consumers.api.app import create_app
from deploy import clickhouse as server
from hallstats.clickhouse import connect, execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import ensure_schema
from tests.support.seed import SeedSpec, finalize_from_counters, seed_counters
from tests.support.services import free_port

pytestmark = pytest.mark.integration

WRITER_PASSWORD = "ch-writer-pw-5d1e-known"
READER_PASSWORD = "ch-reader-pw-8b2c-known"
WEEK = IsoWeek.parse("2024-W50")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(
        stack_dir=tmp_path_factory.mktemp("ch-users"),
        clickhouse_port=free_port(),
        clickhouse_http_port=free_port(),
        clickhouse_user="hs_writer",
        clickhouse_password=SecretStr(WRITER_PASSWORD),
        clickhouse_reader_user="hs_reader",
        clickhouse_reader_password=SecretStr(READER_PASSWORD),
        clickhouse_database="hs_users",
    )
    server.start_clickhouse(settings, progress=lambda m: None)
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        seed_counters(client, settings, SeedSpec())
        finalize_from_counters(client, settings, WEEK, datetime(2024, 12, 16, 2, tzinfo=UTC))
    finally:
        client.disconnect()
    yield settings
    server.stop_clickhouse(settings, progress=lambda m: None)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hallstats.cli", *args],
        env={**settings.as_env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO hs_users.finalized_weeks (week, version) VALUES ('2024-W51', 1)",
        "CREATE TABLE hs_users.intruder (x UInt8) ENGINE = Memory",
        "DROP TABLE hs_users.counters",
        "ALTER TABLE hs_users.counters DELETE WHERE 1",
        "CREATE DATABASE elsewhere",
        "SELECT count() FROM hs_users.counters SETTINGS readonly = 0",
    ],
)
def test_the_reader_cannot_write_create_or_unlock(secured: Settings, statement: str) -> None:
    client = connect(secured, reader=True)
    try:
        with pytest.raises(OperationalError, match=r"(?i)readonly|read-only|Cannot modify"):
            execute(client, statement, settings=secured)
        assert execute(client, "SELECT count() FROM hs_users.counters", settings=secured)[0][0]
    finally:
        client.disconnect()


def test_readers_work_with_the_reader_user_alone(secured: Settings, tmp_path: Path) -> None:
    """A wrong writer password proves the bulletin, revisions and API read as the reader."""
    reader_only = secured.model_copy(update={"clickhouse_password": SecretStr("not-the-writer")})
    outputs = []
    for args in (
        ("bulletin", "--week", str(WEEK), "--format", "json"),
        ("bulletin", "--week", str(WEEK), "--format", "text"),
        ("revisions", "--week", str(WEEK)),
        ("reconcile", "--week", str(WEEK)),
    ):
        run = cli(reader_only, *args)
        assert run.returncode in (0, 4), f"{args}: {run.stderr}"
        outputs.append(run.stdout + run.stderr)
    with TestClient(create_app(reader_only)) as api:
        answer = api.get(f"/weeks/{WEEK}")
        assert answer.status_code == 200, answer.text
        outputs.append(answer.text)
    logs = [p.read_text(errors="replace") for p in Path(secured.stack_dir).rglob("*.log")]
    for text in outputs + logs:
        assert WRITER_PASSWORD not in text and READER_PASSWORD not in text


@pytest.mark.parametrize("user", ["default", "readonly"])
def test_no_passwordless_user_is_left(secured: Settings, user: str) -> None:
    other = secured.model_copy(
        update={"clickhouse_user": user, "clickhouse_password": SecretStr("")}
    )
    client = connect(other)
    try:
        with pytest.raises(OperationalError, match="HALLSTATS_CLICKHOUSE_USER"):
            execute(client, "SELECT 1", settings=other)
    finally:
        client.disconnect()


def test_other_databases_are_out_of_reach(secured: Settings) -> None:
    client = connect(secured)
    try:
        with pytest.raises(OperationalError, match=r"(?i)access|not allowed|denied"):
            execute(
                client, "CREATE TABLE default.intruder (x UInt8) ENGINE = Memory", settings=secured
            )
    finally:
        client.disconnect()


def test_a_wrong_password_names_the_settings(secured: Settings) -> None:
    wrong = secured.model_copy(update={"clickhouse_password": SecretStr("wrong-pw-known")})
    run = cli(wrong, "finalize", "--week", str(WEEK), "--timeout", "5")
    assert run.returncode != 0
    assert "HALLSTATS_CLICKHOUSE_PASSWORD" in run.stderr, run.stderr[-1500:]
    assert "wrong-pw-known" not in run.stdout + run.stderr
    bad_reader = secured.model_copy(
        update={"clickhouse_reader_password": SecretStr("wrong-reader-known")}
    )
    run = cli(bad_reader, "revisions", "--week", str(WEEK))
    assert run.returncode != 0
    assert "HALLSTATS_CLICKHOUSE_READER_PASSWORD" in run.stderr, run.stderr[-1500:]


def test_the_writer_backs_up_over_http(secured: Settings, tmp_path: Path) -> None:
    """HTTP (backup, the worker's bulk inserts) authenticates as the writer too."""
    run = cli(secured, "backup", str(tmp_path / "backup"))
    assert run.returncode == 0, run.stderr[-1500:]
    assert (tmp_path / "backup" / "manifest.json").is_file()
