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

from hallstats.clickhouse import HttpInserter, connect, tsv_line, tsv_text, tsv_utc
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.ddl import ensure_schema
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
        self._http = HttpInserter(settings)
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
        progress: dict[int, int] | None = None,
        heartbeats: Iterable[Record] = (),
    ) -> None:
        """One batch's effects; ``late`` = (record, its finalized week, latest version);
        ``progress`` = next offset per by-event-id partition.

        Order matters (:mod:`streams.state` rebuilds from these tables): the
        archive first, then counters, then progress. If we crash in between,
        the batch is replayed and every write here is idempotent.
        """
        now = datetime.now(UTC).replace(microsecond=0)
        db = self._settings.clickhouse_database
        zone = self._settings.zone
        self._insert(
            f"{db}.terminals",
            "hall_id, window_id, last_seen",
            [(h, w, seen) for (h, w), seen in (terminals or {}).items()],
        )
        self._insert(
            f"{db}.late_events",
            "event_id, week, event_type, occurred_at, finalized_version, recorded_at",
            [
                (r.event.event_id, week, r.event.event_type.value, r.event.occurred_at, v, now)
                for r, week, v in late
            ],
        )
        now_text = tsv_utc(now)
        lines = []
        # The hot path: one line per counted event, formatted by hand. Halls, windows,
        # departments and days repeat within a batch: each is escaped once.
        escaped: dict[object, str] = {}

        def text(value: str) -> str:
            found = escaped.get(value)
            if found is None:
                found = escaped[value] = tsv_text(value)
            return found

        for r in owned:
            e = r.event
            utc = e.occurred_utc
            day = e.local_date(zone)
            day_text = escaped.get(day)
            if day_text is None:
                day_text = escaped[day] = day.isoformat()
            lines.append(
                f"{e.event_id}\t{e.event_type.value}\t{utc[:10]} {utc[11:19]}\t"
                f"{day_text}\t{text(e.hall_id)}\t{text(e.window_id)}\t{text(e.department)}\t"
                f"{tsv_text(e.item_code or '')}\t{tsv_text(e.case_id or '')}\t"
                f"{e.fingerprint()}\t{r.shard}\t{r.position}\t{now_text}"
            )
        self._insert_lines(f"{db}.events", _EVENT_COLUMNS, lines, observe="events")
        self._insert(
            f"{db}.heartbeat_owners",
            "event_id, fingerprint, shard, source_position",
            [(r.event.event_id, r.event.fingerprint(), r.shard, r.position) for r in heartbeats],
        )
        lines = []
        for k, v in dirty.items():  # every combo of each touched period, absolute values
            head = f"{k.shard}\t{k.period_kind}\t{k.period}\t{k.period_start.isoformat()}\t"
            tail = f"\t{v.version}\t{now_text}"
            lines += [
                f"{head}{tsv_text(hall)}\t{tsv_text(department)}\t{event_type.value}\t{n}{tail}"
                for (hall, department, event_type), n in v.counts.items()
            ]
        self._insert_lines(f"{db}.counters", _COUNTER_COLUMNS, lines, observe="counters")
        self._insert(
            f"{db}.progress",
            "partition, next_offset, updated_at",
            [(partition, offset, now) for partition, offset in (progress or {}).items()],
        )

    def _insert(
        self, table: str, columns: str, rows: list[tuple[object, ...]], observe: str = ""
    ) -> None:
        self._insert_lines(table, columns, [tsv_line(row) for row in rows], observe)

    def _insert_lines(self, table: str, columns: str, lines: list[str], observe: str = "") -> None:
        if not lines:
            return
        started = time.perf_counter()
        self._retry(lambda: self._http.insert_lines(table, columns, lines), f"insert into {table}")
        if observe and self._observer is not None:
            self._observer.inserted(observe, len(lines), time.perf_counter() - started)

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
                self._http.close()
                self._sleep(backoff)
                if self._settings.clickhouse_database not in str(exc):
                    continue
                # The database or a table went missing underneath us: recreate it.
                with contextlib.suppress(OperationalError):
                    ensure_schema(self._settings, self._client)
                backoff = min(backoff * 2, self._max_backoff)

    def close(self) -> None:
        self._client.disconnect()
        self._http.close()
