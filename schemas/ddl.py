"""ClickHouse DDL, kept to the SQL subset that both the Debian server (18.16)
and current ClickHouse (chdb) accept.

Exactness comes from idempotent writes: counters are stored as absolute
values with a version (the source offset of the last event applied) in a
ReplacingMergeTree and read with ``argMax``, so re-writing a row after a crash
never double counts.
"""

from __future__ import annotations

import re

from clickhouse_driver import Client

from hallstats.clickhouse import connect, execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.catalog import COUNTED_TYPES, EventType

_TYPE_ENUM = "Enum8(" + ", ".join(f"'{t.value}' = {i}" for i, t in enumerate(EventType, 1)) + ")"


def statements(database: str, cluster: str = "") -> list[str]:
    """Every CREATE needed by the worker and the readers, safe to run repeatedly.

    With ``cluster`` (``HALLSTATS_CLICKHOUSE_CLUSTER``) each runs ``ON CLUSTER`` and
    every table is the Replicated twin of its engine, so all replicas of the shard
    hold it (see :func:`on_cluster`).
    """
    plain = _statements(database)
    return [on_cluster(statement, cluster) for statement in plain] if cluster else plain


def table_names() -> list[str]:
    """The tables :func:`statements` creates, in that order."""
    found = (_CREATES.search(s) for s in _statements("db"))
    return [m.group(1) for m in found if m is not None and m.group(1)]


def on_cluster(statement: str, cluster: str) -> str:
    """``CREATE ... ON CLUSTER`` with ``Replicated*MergeTree``: one ZooKeeper path per
    table and shard (the servers' ``{shard}`` macro), one replica name per server."""
    made = _CREATES.search(statement)
    if made is None:
        return statement
    statement = statement[: made.end()] + f" ON CLUSTER {cluster}" + statement[made.end() :]
    table = made.group(1)
    if table is None:
        return statement
    name = made.group(0).rsplit(" ", 1)[-1]  # database.table

    def replicated(engine: re.Match[str]) -> str:
        args = [f"'/clickhouse/tables/{{shard}}/{name}'", "'{replica}'"]
        if engine.group(2):
            args.append(engine.group(2))
        return f"ENGINE = Replicated{engine.group(1)}MergeTree({', '.join(args)})"

    return _ENGINE.sub(replicated, statement)


_ENGINE = re.compile(r"ENGINE = (\w*)MergeTree\(([^)]*)\)")


def _statements(database: str) -> list[str]:
    figure_columns = ",\n".join(
        f"    {scope}_{t.value} UInt64" for scope in ("weekly", "ytd") for t in COUNTED_TYPES
    )
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        # One row per counter shard: the partition of the by-event-id topic that
        # owns it, so each Faust partition writes only its own rows.
        f"""CREATE TABLE IF NOT EXISTS {database}.counters (
    shard UInt16,
    period_kind Enum8('day' = 1, 'week' = 2, 'year' = 3),
    period String,
    period_start Date,
    hall_id String,
    department String,
    event_type {_TYPE_ENUM},
    value UInt64,
    version UInt64,
    updated_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
ORDER BY (period_kind, period, hall_id, department, event_type, shard)""",
        # Every accepted event once (deduplicated by event_id): the archive that
        # reconciliation recounts independently of the streaming counters.
        f"""CREATE TABLE IF NOT EXISTS {database}.events (
    event_id String,
    event_type {_TYPE_ENUM},
    occurred_at DateTime('UTC'),
    local_date Date,
    hall_id String,
    window_id String,
    department String,
    item_code String,
    case_id String,
    fingerprint String,
    shard UInt16,
    source_position UInt64,
    ingested_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(source_position)
ORDER BY event_id""",
        # Owners of heartbeat event_ids (heartbeats are not archived as events): a
        # counting worker that rebuilds its state must still know them, or a counted
        # event reusing a heartbeat's id would count after a rebuild and not before.
        f"""CREATE TABLE IF NOT EXISTS {database}.heartbeat_owners (
    event_id String,
    fingerprint String,
    shard UInt16,
    source_position UInt64
) ENGINE = ReplacingMergeTree(source_position)
ORDER BY event_id""",
        # Next offset the counting stage will apply, per by-event-id partition, written
        # after the batch's archive and counters: "everything below is in ClickHouse".
        # Finalize waits on it; a worker's local state is checked against it.
        f"""CREATE TABLE IF NOT EXISTS {database}.progress (
    partition UInt16,
    next_offset UInt64,
    updated_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(next_offset)
ORDER BY partition""",
        f"""CREATE TABLE IF NOT EXISTS {database}.finalized_weeks (
    week String,
    version UInt32,
    week_start Date,
    week_end Date,
    ytd_start Date,
    ytd_end Date,
    finalized_at DateTime('UTC'),
{figure_columns},
    content_hash String,
    note String
) ENGINE = MergeTree()
ORDER BY (week, version)""",
        # Last event (any type, heartbeats included) seen per terminal: liveness
        # for completeness, and the event stream's progress for finalization.
        f"""CREATE TABLE IF NOT EXISTS {database}.terminals (
    hall_id String,
    window_id String,
    last_seen DateTime('UTC')
) ENGINE = ReplacingMergeTree(last_seen)
ORDER BY (hall_id, window_id)""",
        # Events counted after their week was finalized: why a revision happens.
        f"""CREATE TABLE IF NOT EXISTS {database}.late_events (
    event_id String,
    week String,
    event_type {_TYPE_ENUM},
    occurred_at DateTime('UTC'),
    finalized_version UInt32,
    recorded_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (week, event_id)""",
        # Per-department and per-hall figures of each finalized version, written
        # with it (consumers/breakdown.py), so breakdowns never drift from totals.
        f"""CREATE TABLE IF NOT EXISTS {database}.finalized_breakdown (
    week String,
    version UInt32,
    scope Enum8('department' = 1, 'hall' = 2),
    name String,
    event_type {_TYPE_ENUM},
    weekly UInt64,
    ytd UInt64
) ENGINE = MergeTree()
ORDER BY (week, version, scope, name, event_type)""",
        # Front-desk terminal credentials (gateway/auth.py): only a SHA-256 of each token.
        # A revocation is a newer row (higher version) for the same token hash.
        f"""CREATE TABLE IF NOT EXISTS {database}.terminal_tokens (
    token_hash String,
    hall_id String,
    window_id String,
    issued_at DateTime('UTC'),
    revoked UInt8,
    changed_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY token_hash""",
    ]


def ensure_schema(settings: Settings, client: Client | None = None) -> None:
    """Create the database and the tables that are missing (idempotent).

    Only what is missing is created, so a read-only user (the API's, the
    bulletin's) passes here once the worker has made the schema; before that, it
    gets an error that says so.
    """
    own = client or connect(settings)
    database = settings.clickhouse_database
    try:
        present = {
            str(name)
            for (name,) in execute(
                own,
                "SELECT name FROM system.tables WHERE database = %(db)s",
                {"db": database},
                settings=settings,
            )
        }
        for statement in statements(database, settings.clickhouse_cluster):
            made = _CREATES.search(statement)
            table = made.group(1) if made is not None else None
            if (table in present) if table else bool(present):  # no table: the database
                continue
            try:
                execute(own, statement, settings=settings)
            except OperationalError as exc:
                if "readonly" not in str(exc).lower():
                    raise
                _create_as_writer(settings, statement, exc)
    finally:
        if client is None:
            own.disconnect()


def _create_as_writer(settings: Settings, statement: str, refused: OperationalError) -> None:
    """A reader's session may not create; the writer (if this process has its
    credentials, as in a one-box setup) makes the missing schema instead."""
    writer = connect(settings)
    try:
        execute(writer, statement, settings=settings)
    except OperationalError as exc:
        raise OperationalError(
            f"ClickHouse: the schema of {settings.clickhouse_database!r} is missing and this "
            "process may not create it (it reads as a read-only user): start `hallstats "
            f"worker` once, or run `hallstats finalize`, with the writer user ({refused}; "
            f"as the writer: {exc})"
        ) from exc
    finally:
        writer.disconnect()


#: What a statement of :func:`statements` creates: group 1 is the table, absent for
#: the database (which exists when any of its tables does).
_CREATES = re.compile(r"CREATE (?:TABLE|DATABASE) IF NOT EXISTS \w+(?:\.(\w+))?")
