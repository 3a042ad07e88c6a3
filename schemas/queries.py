"""Reads of the ClickHouse tables that the worker and the readers both rely on.

The tables are part of the contract (:mod:`schemas.ddl`); so are the rules for
reading them. Each rule lives here once, and every caller (counting, metrics,
figures, breakdowns, status, finalize) goes through it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

from clickhouse_driver import Client

from hallstats.clickhouse import execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import table_names

_COUNTER_KEY = "shard, period_kind, period, hall_id, department, event_type"

#: The terminal horizon: a window (terminal) heard from within this span is "known",
#: so its silence matters. Read back from a week's end by completeness
#: (:mod:`consumers.completeness`), from now by the worker's terminal gauges and
#: ``hallstats status`` (:func:`streams.metrics.window_activity`).
TERMINAL_HORIZON: Final = timedelta(weeks=4)
#: The same as operator texts say it: "4 weeks".
TERMINAL_HORIZON_TEXT: Final = f"{TERMINAL_HORIZON.days // 7} weeks"


def latest_counts(
    client: Client,
    settings: Settings,
    *,
    by: Sequence[str],
    where: str,
    params: dict[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """The counter read rule: rows are absolute values with versions, so per counter
    key the highest version wins (argMax), then shards are summed, grouped ``by``
    the given columns. Rows: the ``by`` columns, then the sum."""
    group = ", ".join(by)
    query = (
        f"SELECT {group}, sum(v) FROM ("
        f" SELECT {_COUNTER_KEY}, argMax(value, version) AS v"
        f" FROM {settings.clickhouse_database}.counters WHERE {where}"
        f" GROUP BY {_COUNTER_KEY}"
        f") GROUP BY {group}"
    )
    return [tuple(row) for row in execute(client, query, params or {}, settings=settings)]


def finalized_weeks(client: Client, settings: Settings) -> dict[IsoWeek, int]:
    """Every finalized week and its latest version."""
    rows = execute(
        client,
        f"SELECT week, max(version) FROM {settings.clickhouse_database}.finalized_weeks "
        "GROUP BY week",
        settings=settings,
    )
    return {IsoWeek.parse(str(w)): int(v) for w, v in rows}


def durable_positions(client: Client, settings: Settings) -> dict[int, int]:
    """Next offset to count per by-event-id partition, as ClickHouse has it."""
    rows = execute(
        client,
        f"SELECT partition, max(next_offset) FROM {settings.clickhouse_database}.progress "
        "GROUP BY partition",
        settings=settings,
    )
    return {int(p): int(o) for p, o in rows}


def sync_replicas(client: Client, settings: Settings, timeout: float = 600.0) -> None:
    """On a replicated cluster, wait until this replica holds everything the others
    have logged (``SYSTEM SYNC REPLICA``), before figures are read from it.

    Tables replicate independently, so ``progress`` goes first: every counter,
    archive row and owner written before a progress row is then fetched too, and
    what is read is never older than the positions it claims. A replica that holds
    parts no live replica has makes this wait until it is back, up to ``timeout``
    (one statement ends at the client's receive timeout; it is asked again):
    official figures and a rebuilt state wait rather than miss rows.
    """
    if not settings.clickhouse_cluster:
        return
    db = settings.clickhouse_database
    deadline = time.monotonic() + timeout
    for table in sorted(table_names(), key=lambda name: name != "progress"):
        while True:
            try:
                execute(client, f"SYSTEM SYNC REPLICA {db}.{table}", settings=settings)
                break
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    raise OperationalError(
                        f"ClickHouse: replica {settings.clickhouse_host}:"
                        f"{settings.clickhouse_port} has not caught up on {db}.{table} "
                        f"within {timeout:.0f} s (is a replica holding rows the others "
                        f"lack down?): {exc}"
                    ) from exc
                time.sleep(1.0)
