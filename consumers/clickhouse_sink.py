"""Idempotent writes of counters and archived events to ClickHouse.

Every write is an absolute value with a version, so the worker may repeat
any write after a crash or a timeout without changing a figure. While
ClickHouse is unreachable the sink retries with backoff and the worker stops
acknowledging input: back-pressure instead of loss.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from consumers.clickhouse import connect, ensure_schema, execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from streams.ledger import PeriodCounts, PeriodKey, Record

log = logging.getLogger(__name__)

_COUNTER_COLUMNS = (
    "shard, period_kind, period, period_start, hall_id, department, event_type, "
    "value, version, updated_at"
)
_EVENT_COLUMNS = (
    "event_id, event_type, occurred_at, local_date, hall_id, window_id, department, "
    "item_code, case_id, fingerprint, shard, source_position, ingested_at"
)


class SinkObserver(Protocol):
    """Told about every insert and failed attempt (metrics, issue 4); must be cheap."""

    def inserted(self, table: str, rows: int, seconds: float) -> None: ...

    def failed(self) -> None: ...


class ClickHouseSink:
    """Writes one batch's dirty counters and owned events; retries until it lands."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        observer: SinkObserver | None = None,
    ) -> None:
        self._settings = settings
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._client = connect(settings)
        self._observer = observer
        self.failures = 0

    def ensure_schema(self) -> None:
        self._retry(lambda: ensure_schema(self._settings, self._client), "create schema")

    def write(
        self,
        dirty: dict[PeriodKey, PeriodCounts],
        owned: Iterable[Record],
        *,
        terminals: dict[tuple[str, str], datetime] | None = None,
        late: Iterable[tuple[Record, str, int]] = (),
    ) -> None:
        """One batch's effects; ``late`` = (record, its finalized week, latest version)."""
        now = datetime.now(UTC).replace(microsecond=0)
        db = self._settings.clickhouse_database
        extras = [
            (
                f"INSERT INTO {db}.terminals (hall_id, window_id, last_seen) VALUES",
                [
                    (h, w, seen.astimezone(UTC).replace(microsecond=0))
                    for (h, w), seen in (terminals or {}).items()
                ],
            ),
            (
                f"INSERT INTO {db}.late_events (event_id, week, event_type, occurred_at, "
                "finalized_version, recorded_at) VALUES",
                [
                    (
                        r.event.event_id,
                        week,
                        r.event.event_type.value,
                        r.event.occurred_at.astimezone(UTC).replace(microsecond=0),
                        version,
                        now,
                    )
                    for r, week, version in late
                ],
            ),
        ]
        for statement, rows in extras:
            if rows:
                self._retry(
                    lambda s=statement, r=rows: execute(
                        self._client, s, r, settings=self._settings
                    ),  # type: ignore[misc]
                    statement.split("(")[0].strip().lower(),
                )
        counter_rows = [
            (
                k.shard,
                k.period_kind,
                k.period,
                k.period_start,
                hall,
                department,
                event_type.value,
                n,
                v.version,
                now,
            )
            for k, v in dirty.items()
            for (hall, department, event_type), n in v.counts.items()
        ]
        zone = self._settings.zone
        event_rows = [
            (
                r.event.event_id,
                r.event.event_type.value,
                r.event.occurred_at.astimezone(UTC).replace(microsecond=0),
                r.event.occurred_at.astimezone(zone).date(),
                r.event.hall_id,
                r.event.window_id,
                r.event.department,
                r.event.item_code or "",
                r.event.case_id or "",
                r.event.fingerprint(),
                r.shard,
                r.position,
                now,
            )
            for r in owned
        ]
        db = self._settings.clickhouse_database
        # Archive first: if we crash between the two inserts the counters are
        # re-written on replay, and the archive is idempotent either way.
        if event_rows:
            started = time.perf_counter()
            self._retry(
                lambda: execute(
                    self._client,
                    f"INSERT INTO {db}.events ({_EVENT_COLUMNS}) VALUES",
                    event_rows,
                    settings=self._settings,
                ),
                f"insert {len(event_rows)} events",
            )
            if self._observer is not None:
                self._observer.inserted("events", len(event_rows), time.perf_counter() - started)
        if counter_rows:
            started = time.perf_counter()
            self._retry(
                lambda: execute(
                    self._client,
                    f"INSERT INTO {db}.counters ({_COUNTER_COLUMNS}) VALUES",
                    counter_rows,
                    settings=self._settings,
                ),
                f"insert {len(counter_rows)} counters",
            )
            if self._observer is not None:
                self._observer.inserted(
                    "counters", len(counter_rows), time.perf_counter() - started
                )

    def _retry(self, action: Callable[[], object], what: str) -> None:
        backoff = 0.2
        while True:
            try:
                action()
                return
            except OperationalError as exc:
                self.failures += 1
                if self._observer is not None:
                    self._observer.failed()
                log.warning("ClickHouse %s failed (retrying in %.1fs): %s", what, backoff, exc)
                self._client.disconnect()
                self._sleep(backoff)
                if self._settings.clickhouse_database not in str(exc):
                    continue
                # The database or a table went missing underneath us: recreate it.
                with contextlib.suppress(OperationalError):
                    ensure_schema(self._settings, self._client)
                backoff = min(backoff * 2, self._max_backoff)

    def close(self) -> None:
        self._client.disconnect()
