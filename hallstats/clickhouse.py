"""Connections to the ClickHouse server (native protocol, clickhouse-driver)."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import queue
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseDriverError
from clickhouse_driver.util.escape import escape_param

from hallstats.errors import OperationalError
from hallstats.settings import Settings

log = logging.getLogger(__name__)


def connect(settings: Settings, *, reader: bool = False) -> Client:
    """A client on the ``system`` database: hallstats always qualifies table names,
    so a client works before ``settings.clickhouse_database`` exists, and a user
    limited to that one database (``allow_databases``) may still connect. The
    password is passed through, never logged.

    ``reader``: the read-only user when one is configured (the server refuses its
    writes); otherwise the writer's user in sessions marked read-only.
    """
    if reader and settings.clickhouse_reader_user:
        user = settings.clickhouse_reader_user
        password = settings.clickhouse_reader_password.get_secret_value()
    else:
        user, password = settings.clickhouse_user, settings.clickhouse_password.get_secret_value()
    others = ",".join(f"{host}:{port}" for host, port, _http in settings.clickhouse_servers[1:])
    client = Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        alt_hosts=others or None,  # tried in turn when a connection cannot be made
        user=user,
        password=password,
        database="system",
        connect_timeout=5,
        send_receive_timeout=60,
        settings={"use_client_time_zone": False},
    )
    if reader and not settings.clickhouse_reader_user:
        client.settings["readonly"] = 2  # reads and session settings only
    return client


def execute(client: Client, query: str, params: Any = None, *, settings: Settings) -> Any:
    """Run one statement, turning driver and socket failures into OperationalError."""
    try:
        result = client.execute(query, params)
    except (ClickHouseDriverError, OSError, EOFError) as exc:
        raise _operational(exc, settings, client) from exc
    if settings.clickhouse_statement_log is not None:  # rendered as the server got it
        log_statement(settings, _rendered(client, query, params))
    return result


def execute_iter(
    client: Client, query: str, *, settings: Settings, block_rows: int = 65_536
) -> Iterator[tuple[Any, ...]]:
    """Stream a large result block by block (bounded memory), errors as in :func:`execute`."""
    if settings.clickhouse_statement_log is not None:
        log_statement(settings, query)
    try:
        yield from client.execute_iter(query, settings={"max_block_size": block_rows})
    except (ClickHouseDriverError, OSError, EOFError) as exc:
        raise _operational(exc, settings, client) from exc


def log_statement(settings: Settings, sql: str) -> None:
    """Append one statement to the statement log (``HALLSTATS_CLICKHOUSE_STATEMENT_LOG``).

    One file per process, one JSON line per statement, in the order sent: the
    worker's processes, the CLI and the API all write there, and the compatibility
    test replays what they sent on a current ClickHouse. Secrets are never part of
    a statement (passwords travel in the connection, tokens only as hashes).
    """
    folder = settings.clickhouse_statement_log
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps({"sql": sql}, ensure_ascii=False) + "\n")


def _rendered(client: Client, query: str, params: Any) -> str:
    """The statement as the server receives it: parameters substituted, and the rows
    of an ``INSERT ... VALUES`` written as SQL literals."""
    context = client.connection.context
    if isinstance(params, dict):
        return str(client.substitute_params(query, params, context))
    if isinstance(params, list | tuple) and params:
        rows = ", ".join(
            "(" + ", ".join(str(escape_param(v, context)) for v in row) + ")" for row in params
        )
        return f"{query} {rows}"
    return query


def _operational(
    exc: BaseException, settings: Settings, client: Client | None = None
) -> OperationalError:
    where = f"ClickHouse at {settings.clickhouse_host}:{settings.clickhouse_port}"
    if getattr(exc, "code", None) in _AUTHENTICATION_CODES:
        user = client.connection.user if client is not None else settings.clickhouse_user
        names = (
            "HALLSTATS_CLICKHOUSE_READER_USER and HALLSTATS_CLICKHOUSE_READER_PASSWORD"
            if settings.clickhouse_reader_user and user == settings.clickhouse_reader_user
            else "HALLSTATS_CLICKHOUSE_USER and HALLSTATS_CLICKHOUSE_PASSWORD"
        )
        return OperationalError(
            f"{where} refused user {user!r}: check {names} "
            f"(server code {getattr(exc, 'code', '?')})"
        )
    return OperationalError(f"{where}: {type(exc).__name__}: {exc}".strip())


#: UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, AUTHENTICATION_FAILED.
_AUTHENTICATION_CODES = frozenset({192, 193, 194, 516})


def tsv_text(value: str) -> str:
    """A string as a TabSeparated field (escaped only when it needs it)."""
    if value.isprintable() and "\\" not in value:
        return value
    return value.translate(_TSV_ESCAPES)


def tsv_utc(moment: datetime) -> str:
    """A DateTime('UTC') field: the UTC wall time to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _tsv_field(value: object) -> str:
    if isinstance(value, str):
        return tsv_text(value)
    if isinstance(value, datetime):
        return tsv_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool) or value is None:
        raise OperationalError(f"TabSeparated insert: unsupported value {value!r}")
    return str(value)


def tsv_line(row: Iterable[object]) -> str:
    return "\t".join(map(_tsv_field, row))


_TSV_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
)


class HttpInserter:
    """Bulk ``INSERT ... FORMAT TabSeparated`` over ClickHouse's HTTP interface.

    The native driver encodes rows in Python at about 12 µs a row; a
    TabSeparated body costs about 1 µs and the server parses it in C++. Used for
    the worker's large per-batch inserts; everything else keeps the driver.
    Errors keep the server's own message (``Code: 60, ... doesn't exist``).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: http.client.HTTPConnection | None = None
        self._server = 0  # index into settings.clickhouse_servers
        credentials = (
            f"{settings.clickhouse_user}:{settings.clickhouse_password.get_secret_value()}"
        )
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
            "Content-Type": "text/tab-separated-values; charset=UTF-8",
        }

    def insert_lines(self, table: str, columns: str, lines: list[str]) -> None:
        """Rows already formatted as TabSeparated lines (see :func:`tsv_text`)."""
        if not lines:
            return
        body = ("\n".join(lines) + "\n").encode()
        statement = f"INSERT INTO {table} ({columns}) FORMAT TabSeparated"
        log_statement(self._settings, statement)
        query = urllib.parse.quote(statement)
        servers = self._settings.clickhouse_servers
        attempts = len(servers) + 1  # a stale keep-alive connection, then each server
        for attempt in range(attempts):
            reused = self._connection is not None
            host, _native, port = servers[self._server]
            where = f"ClickHouse at {host}:{port}"
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(host, port, timeout=60)
                self._connection.request("POST", f"/?query={query}", body, self._headers)
                response = self._connection.getresponse()
                answer = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # The server closes idle keep-alive connections: one fresh try. A fresh
                # connection that fails means this server is down: the next replica.
                # A retried insert is harmless: every table is idempotent by key.
                if not reused:
                    self._server = (self._server + 1) % len(servers)
                if attempt + 1 < attempts:
                    continue
                raise OperationalError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            self.close()
            message = answer.decode("utf-8", "replace").strip()[:1000]
            raise OperationalError(f"{where}: HTTP {response.status}: {message}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ClientPool:
    """A few reused connections for threads that each need one at a time (a
    clickhouse-driver Client is not thread-safe); ``readonly`` sessions refuse writes
    and DDL on the server side. A connection that failed is never reused."""

    def __init__(self, settings: Settings, keep: int = 4, *, readonly: bool = False) -> None:
        self._settings = settings
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._keep = keep
        self._readonly = readonly

    def _new(self) -> Client:
        return connect(self._settings, reader=self._readonly)

    @contextmanager
    def client(self) -> Iterator[Client]:
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._new()
        broken = False
        try:
            yield client
        except OperationalError:
            broken = True
            raise
        finally:
            if broken or self._idle.qsize() >= self._keep:
                client.disconnect()
            else:
                self._idle.put(client)  # also after a data error raised inside the block

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().disconnect()
