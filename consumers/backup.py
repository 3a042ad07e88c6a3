"""Backup and restore of the hallstats database: ``hallstats backup DIR`` / ``restore DIR``.

A backup is a folder: one ``<table>.tsv`` per table of the database, every row as
stored (``SELECT *``, not ``FINAL``: counter versions, every finalized version and
its content hash, the events archive, progress, owners, tokens...), fetched in
ClickHouse's TabSeparated format over its HTTP interface, and ``manifest.json``:
source database and time, server version, the DDL, and per table its columns,
CREATE statement, row count, size and SHA-256.

``restore`` checks the manifest and every file's hash before touching the server,
refuses a database that already holds rows unless ``force`` (then it drops the
backed-up tables first), creates the schema with :func:`schemas.ddl.ensure_schema`
and inserts each file back. The restored ``progress`` is what the worker compares
its local state with (:mod:`streams.state`), so counting continues exactly from
the restored positions. Stop the worker while restoring.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from hallstats.clickhouse import connect, execute, log_statement
from hallstats.errors import DataError, OperationalError
from hallstats.settings import Settings
from schemas.ddl import ensure_schema, statements, table_names
from schemas.events import SCHEMA_VERSION

MANIFEST = "manifest.json"
KIND = "hallstats-backup"
FORMAT_VERSION = 1
_PLACEHOLDER = "{database}"
_CHUNK = 1 << 20
_FIRST = ("progress", "counters")

# (table, bytes just done, the table's total bytes or None when unknown)
Progress = Callable[[str, int, int | None], None]


def _quiet(table: str, done: int, total: int | None) -> None:
    return None


def _reporter(progress: Progress, table: str, total: int | None) -> Callable[[int], None]:
    def report(done: int) -> None:
        progress(table, done, total)

    return report


@dataclass(frozen=True)
class TableCopy:
    name: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Report:
    database: str
    directory: Path
    tables: list[TableCopy]
    seconds: float


class _Http:
    """Queries over ClickHouse's HTTP interface, user and password in a Basic header
    (never in a URL, a log line or a message)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        secret = f"{settings.clickhouse_user}:{settings.clickhouse_password.get_secret_value()}"
        self._auth = "Basic " + base64.b64encode(secret.encode()).decode()
        self.where = (
            f"ClickHouse HTTP at {settings.clickhouse_host}:{settings.clickhouse_http_port}"
        )

    def _send(
        self, query: str, body: bytes | _Counting, length: int
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        s = self._settings
        log_statement(s, query)
        connection = http.client.HTTPConnection(
            s.clickhouse_host, s.clickhouse_http_port, timeout=300
        )
        headers = {"Authorization": self._auth, "Content-Length": str(length)}
        try:
            connection.request("POST", "/?query=" + urllib.parse.quote(query), body, headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise OperationalError(
                f"{self.where}: {type(exc).__name__}: {exc} (is it running? `hallstats stack up`)"
            ) from exc
        if response.status != 200:
            message = response.read().decode("utf-8", "replace").strip()[:1000]
            connection.close()
            raise OperationalError(f"{self.where}: HTTP {response.status}: {message}")
        return connection, response

    def dump(self, query: str, target: Path, on_bytes: Callable[[int], None]) -> tuple[int, str]:
        """Stream a SELECT's answer into ``target``: (size, sha256)."""
        connection, response = self._send(query, b"", 0)
        digest = hashlib.sha256()
        size = 0
        tail = b""
        try:
            with target.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    tail = (tail + chunk)[-4096:]
                    on_bytes(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise OperationalError(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        # An error after the answer started comes as text at its end, still HTTP 200.
        if b"DB::Exception" in tail and b"\nCode: " in b"\n" + tail:
            message = tail.decode("utf-8", "replace").rsplit("Code: ", 1)[-1][:500]
            raise OperationalError(f"{self.where}: dump of {target.name} failed: Code: {message}")
        return size, digest.hexdigest()

    def load(self, query: str, source: Path, on_bytes: Callable[[int], None]) -> None:
        with source.open("rb") as raw:
            connection, response = self._send(
                query, _Counting(raw, on_bytes), source.stat().st_size
            )
            response.read()
            connection.close()


class _Counting:
    """A file whose reads report their size (http.client sends any object with read)."""

    def __init__(self, raw: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._on_bytes(len(data))
        return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _columns(client: Any, settings: Settings, database: str, table: str) -> list[list[str]]:
    rows = execute(
        client,
        "SELECT name, type FROM system.columns WHERE database = %(d)s AND table = %(t)s",
        {"d": database, "t": table},
        settings=settings,
    )
    return [[str(n), str(t)] for n, t in rows]


def _tables(client: Any, settings: Settings, database: str) -> list[str]:
    rows = execute(
        client,
        "SELECT name FROM system.tables WHERE database = %(d)s",
        {"d": database},
        settings=settings,
    )
    return [str(r[0]) for r in rows]


def backup(settings: Settings, directory: Path, progress: Progress = _quiet) -> Report:
    """Write every table of ``settings.clickhouse_database`` and a manifest into ``directory``."""
    started = time.monotonic()
    db = settings.clickhouse_database
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise DataError(f"backup: {directory} is not empty; give a new or empty folder")
    client = connect(settings)
    try:
        present = _tables(client, settings, db)
        if not present:
            raise DataError(f"backup: database {db!r} has no tables (nothing to back up)")
        # progress, then counters, then the archive: the order a worker's rebuild reads
        # them (streams/state.py), so even a backup taken while it writes is one a
        # rebuild can continue from exactly.
        known = ["progress", "counters", *(t for t in table_names() if t not in _FIRST)]
        names = [t for t in known if t in present] + sorted(set(present) - set(known))
        version = str(execute(client, "SELECT version()", settings=settings)[0][0])
        plans = []
        for name in names:
            create = str(execute(client, f"SHOW CREATE TABLE {db}.{name}", settings=settings)[0][0])
            plans.append((name, _columns(client, settings, db, name), create))
    finally:
        client.disconnect()
    directory.mkdir(parents=True, exist_ok=True)
    http = _Http(settings)
    entries: list[dict[str, Any]] = []
    copies = []
    for name, columns, create in plans:
        file = f"{name}.tsv"
        progress(name, 0, None)
        query = f"SELECT {', '.join(c for c, _ in columns)} FROM {db}.{name} FORMAT TabSeparated"
        size, digest = http.dump(query, directory / file, _reporter(progress, name, None))
        rows = _count_lines(directory / file)
        entries.append(
            {
                "table": name,
                "file": file,
                "rows": rows,
                "bytes": size,
                "sha256": digest,
                "columns": columns,
                "create": create.replace(f"{db}.{name}", f"{_PLACEHOLDER}.{name}", 1),
            }
        )
        copies.append(TableCopy(name, rows, size))
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "database": db,
        "created_at": datetime.now(UTC).isoformat(),
        "clickhouse_version": version,
        "event_schema_version": SCHEMA_VERSION,
        "ddl": statements(_PLACEHOLDER),
        "format": "TabSeparated",
        "tables": entries,
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")
    return Report(db, directory, copies, time.monotonic() - started)


def _count_lines(path: Path) -> int:
    """TabSeparated rows: one line each (a newline inside a value is written ``\\n``)."""
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            lines += chunk.count(b"\n")
    return lines


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, checked: its form, then every file's size and SHA-256."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DataError(f"restore: {path} not found (not a hallstats backup folder)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest["kind"] != KIND or manifest["format_version"] != FORMAT_VERSION:
            raise ValueError(f"kind {manifest['kind']!r} v{manifest['format_version']}")
        tables = manifest["tables"]
        for entry in tables:
            for key, kind in (("table", str), ("file", str), ("sha256", str), ("rows", int)):
                if not isinstance(entry[key], kind):
                    raise ValueError(f"{key} of {entry.get('table')!r}")
            if not re.fullmatch(r"\w+", entry["table"]) or entry["file"] != f"{entry['table']}.tsv":
                raise ValueError(f"table {entry['table']!r}, file {entry['file']!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"restore: {path} is not a valid manifest: {exc}") from exc
    for entry in tables:
        file = Path(directory) / entry["file"]
        if not file.is_file():
            raise DataError(f"restore: {file} is missing (listed in the manifest)")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise DataError(
                f"restore: {file} does not match its SHA-256 in the manifest "
                "(damaged or changed); nothing was restored"
            )
    return dict(manifest)


def restore(
    settings: Settings, directory: Path, *, force: bool = False, progress: Progress = _quiet
) -> Report:
    """Load a backup folder into ``settings.clickhouse_database`` (see the module doc)."""
    started = time.monotonic()
    if force and settings.clickhouse_cluster:
        raise DataError(
            "restore --force: on a replicated cluster a dropped table comes back from the "
            "other replicas; restore into a new, empty cluster (HALLSTATS_CLICKHOUSE_CLUSTER "
            f"is {settings.clickhouse_cluster!r})"
        )
    manifest = read_manifest(directory)
    db = settings.clickhouse_database
    tables: list[dict[str, Any]] = manifest["tables"]
    client = connect(settings)
    try:
        present = _tables(client, settings, db)
        filled = [
            (name, n)
            for name in present
            for n in [
                int(execute(client, f"SELECT count() FROM {db}.{name}", settings=settings)[0][0])
            ]
            if n
        ]
        if filled and not force:
            listed = ", ".join(f"{name} ({n} rows)" for name, n in filled[:5])
            raise DataError(
                f"restore: database {db!r} already has data: {listed}; restore into an empty "
                "database, or pass --force to replace the backed-up tables"
            )
        if force:
            for entry in tables:
                execute(client, f"DROP TABLE IF EXISTS {db}.{entry['table']}", settings=settings)
        ensure_schema(settings, client)
        for entry in tables:
            if entry["table"] not in table_names():
                create = str(entry["create"]).replace(
                    f"CREATE TABLE {_PLACEHOLDER}.", f"CREATE TABLE IF NOT EXISTS {db}.", 1
                )
                execute(client, create, settings=settings)
        for entry in tables:
            have = {c: t for c, t in _columns(client, settings, db, entry["table"])}
            wrong = [f"{c} {t}" for c, t in entry["columns"] if have.get(c) != t]
            if wrong:
                raise DataError(
                    f"restore: {entry['file']}: columns {', '.join(wrong)} do not match "
                    f"{db}.{entry['table']} of this version"
                )
    finally:
        client.disconnect()
    http = _Http(settings)
    copies = []
    for entry in tables:
        name = entry["table"]
        columns = ", ".join(c for c, _ in entry["columns"])
        progress(name, 0, entry["bytes"])
        if entry["rows"]:
            http.load(
                f"INSERT INTO {db}.{name} ({columns}) FORMAT TabSeparated",
                Path(directory) / entry["file"],
                _reporter(progress, name, int(entry["bytes"])),
            )
        copies.append(TableCopy(name, entry["rows"], entry["bytes"]))
    return Report(db, Path(directory), copies, time.monotonic() - started)
