"""Prometheus metrics of the worker: what operations watch live (issue 4).

Two kinds, kept apart on purpose:

* Event-path counters and histograms (accepted, rejected, duplicates, late,
  latency, ClickHouse writes) are per-process tallies updated by the agents.
  Prometheus's ``rate``/``increase`` absorb their resets on restart.
* Figures operations read as numbers (today's, this week's and year-to-date
  counts, consumer lag, last finalized week, silent terminals) are gauges
  recomputed every ``metrics_refresh_seconds`` from ClickHouse and Kafka, the
  durable truth, so they stay right across restarts and partition moves. Every
  worker reports the same values: aggregate them with ``max``, never ``sum``.

Each app gets its own :class:`CollectorRegistry` (tests run several apps per
process). Faust's sensors are registered on the same registry, so one
``/metrics`` carries both; it is served on ``settings.metrics_port`` by
prometheus-client and also on Faust's web server (``worker_web_port``).
Labels are bounded: type, hall, department, reason, period, topic/partition;
never event_id or window_id. ``metrics_port = 0`` turns all of it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clickhouse_driver import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hallstats.clickhouse import connect, execute
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import COUNTED_TYPES
from schemas.ddl import ensure_schema
from schemas.queries import (
    TERMINAL_HORIZON,
    TERMINAL_HORIZON_TEXT,
    finalized_weeks,
    latest_counts,
)
from streams.count_summary import LATENCY_BUCKETS, CountSummary, summarize
from streams.lateness import FinalizedWeeks
from streams.ledger import BatchOutcome, Record
from streams.stage_stats import BatchHistogram, StageCollector, StageTallies

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

PERIODS = ("today", "week", "year_to_date")

WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROW_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000)


# --- ClickHouse reads, shared with `hallstats status` -------------------------------------


def live_counts(
    client: Client, settings: Settings, now: datetime
) -> dict[tuple[str, str, str], int]:
    """``(period, type, hall) -> count`` for today, this ISO week and this year (local)."""
    today = now.astimezone(settings.zone).date()
    kinds = {"day": "today", "week": "week", "year": "year_to_date"}
    rows = latest_counts(
        client,
        settings,
        by=("period_kind", "hall_id", "event_type"),
        where="(period_kind = 'day' AND period = %(day)s)"
        " OR (period_kind = 'week' AND period = %(week)s)"
        " OR (period_kind = 'year' AND period = %(year)s)",
        params={
            "day": today.isoformat(),
            "week": str(IsoWeek.of(today)),
            "year": f"{today.year:04d}",
        },
    )
    return {(kinds[str(k)], str(t), str(h)): int(n) for k, h, t, n in rows}


@dataclass(frozen=True)
class WindowSeen:
    """When one terminal (hall, window) last sent anything."""

    hall_id: str
    window_id: str
    last_seen: datetime

    def silent(self, now: datetime, threshold_seconds: float) -> bool:
        return (now - self.last_seen).total_seconds() > threshold_seconds


def window_activity(client: Client, settings: Settings, now: datetime) -> list[WindowSeen]:
    """Windows heard from within :data:`schemas.queries.TERMINAL_HORIZON` of ``now``.

    The ``terminals`` table has the last event of each window, heartbeats
    included; the events archive (counted events only) backs it up for data
    written before that table existed.
    """
    since = int((now - TERMINAL_HORIZON).timestamp())
    db = settings.clickhouse_database
    rows = execute(
        client,
        f"""
SELECT hall_id, window_id, toUInt32(max(seen)) FROM (
    SELECT hall_id, window_id, last_seen AS seen FROM {db}.terminals
    WHERE last_seen >= toDateTime(%(since)s)
    UNION ALL
    SELECT hall_id, window_id, occurred_at AS seen FROM {db}.events
    WHERE occurred_at >= toDateTime(%(since)s)
) GROUP BY hall_id, window_id""",
        {"since": since},
        settings=settings,
    )
    return [WindowSeen(str(h), str(w), datetime.fromtimestamp(int(ts), UTC)) for h, w, ts in rows]


# --- the metrics -------------------------------------------------------------------------


class WorkerMetrics:
    """The worker's business metrics; every method is a no-op when disabled."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        stages: list[StageTallies] | None = None,
        finalized: FinalizedWeeks | None = None,
    ) -> None:
        """``finalized``: counting's finalized weeks (late events), which every refresh
        updates too, so once ``/metrics`` shows a week finalized, counting knows it."""
        self.settings = settings
        self.enabled = settings.metrics_port != 0
        self._finalized_weeks = finalized
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server: Any = None
        self._client: Client | None = None
        self._count_labels: set[tuple[str, str, str]] = set()
        self._halls: set[str] = set()
        r = self.registry
        # Per-stage throughput and every rejection, read at scrape time (the intake
        # stage may be another process: its tallies are in shared memory).
        self.stages = stages if stages is not None else [StageTallies("count")]
        if self.enabled:
            r.register(StageCollector(self.stages))
        self.accepted = Counter(
            "hallstats_events_accepted",
            "Valid events counted for the first time (after dedup), by type, hall, department.",
            ["type", "hall", "department"],
            registry=r,
        )
        self.duplicates = Counter(
            "hallstats_duplicates_dropped",
            "Re-sent copies of already counted events, dropped.",
            registry=r,
        )
        self.late = Counter(
            "hallstats_late_events",
            "Events counted into an ISO week that was already finalized.",
            ["type"],
            registry=r,
        )
        self._late = {t.value: self.late.labels(t.value) for t in COUNTED_TYPES}
        self.period_events = Gauge(
            # Not "hallstats_count": a "_count" suffix is reserved for histograms.
            "hallstats_period_events",
            "Events counted so far in the current local day, ISO week, year (from ClickHouse).",
            ["period", "type", "hall"],
            registry=r,
        )
        self.latency = BatchHistogram(
            "hallstats_event_latency_seconds",
            "Seconds from occurred_at, or from the raw message's Kafka timestamp, to counted.",
            "source",
            LATENCY_BUCKETS,
        )
        r.register(self.latency)
        self.lag = Gauge(
            "hallstats_consumer_lag",
            "Messages not yet durably processed by the stage reading the topic.",
            ["topic", "partition"],
            registry=r,
        )
        write_seconds = Histogram(
            "hallstats_clickhouse_write_seconds",
            "Seconds one ClickHouse insert took until it landed, retries included.",
            ["table"],
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        batch_rows = Histogram(
            "hallstats_clickhouse_batch_rows",
            "Rows per ClickHouse insert.",
            ["table"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self._write = {
            t: (write_seconds.labels(t), batch_rows.labels(t)) for t in ("events", "counters")
        }
        self.write_failures = Counter(
            "hallstats_clickhouse_write_failures",
            "Failed ClickHouse statements (each is retried until it lands).",
            registry=r,
        )
        self.last_finalized = Gauge(
            "hallstats_last_finalized_week_timestamp_seconds",
            "End (Sunday 24:00 local) of the newest finalized ISO week; 0 if none.",
            registry=r,
        )
        self.last_finalized_age = Gauge(
            "hallstats_last_finalized_week_age_seconds",
            "Seconds since the end of the newest finalized ISO week, at the last refresh.",
            registry=r,
        )
        self.terminal_last_seen = Gauge(
            "hallstats_terminal_last_seen_timestamp_seconds",
            "Newest occurred_at from any window of the hall, heartbeats included "
            f"({TERMINAL_HORIZON_TEXT}).",
            ["hall"],
            registry=r,
        )
        self.terminals_silent = Gauge(
            "hallstats_terminals_silent",
            f"Windows seen in the last {TERMINAL_HORIZON_TEXT} but silent for more than "
            "terminal_silence_seconds.",
            ["hall"],
            registry=r,
        )
        self.refresh_errors = Counter(
            "hallstats_metrics_refresh_errors",
            "Failed refreshes of the ClickHouse/Kafka-derived gauges, by part.",
            ["part"],
            registry=r,
        )
        for part in ("counts", "terminals", "finalized", "lag"):
            self.refresh_errors.labels(part)

    # --- wiring --------------------------------------------------------------------------

    def install(self, app: faust.App) -> None:
        """Faust sensors on our registry, plus worker tasks: HTTP server and refresher."""
        if not self.enabled:
            return
        import prometheus_client
        from faust.sensors.prometheus import setup_prometheus_sensors

        # Process-wide: drops the *_created series (half of all), which nothing reads.
        disable_created: Callable[[], None] = prometheus_client.disable_created_metrics
        disable_created()
        if self.settings.metrics_faust_sensors:
            # Also mounts /metrics on Faust's web server. A fixed prefix (not the app
            # id) so dashboards work for any HALLSTATS_APP_ID. Costs tens of
            # microseconds per message (bench/metrics_cost.py measures it).
            setup_prometheus_sensors(app, registry=self.registry, name_prefix="faust")

        @app.on_partitions_assigned.connect
        async def _serve_early(*_args: Any, **_kwargs: Any) -> None:
            # The first assignment comes before table recovery, app tasks after it:
            # serving here lets Prometheus watch a long recovery too.
            self.serve()

        async def _metrics_refresher() -> None:
            self.serve()
            while True:
                await asyncio.to_thread(self.refresh)
                await asyncio.sleep(self.settings.metrics_refresh_seconds)

        app.task(_metrics_refresher)

    def serve(self) -> None:
        """Serve the registry on 127.0.0.1:metrics_port.

        A port already taken is logged, not fatal: counting matters more than
        watching it, and Prometheus reports the target down.
        """
        if not self.enabled or self._server is not None:
            return
        try:
            self._server, _thread = start_http_server(
                self.settings.metrics_port, addr="127.0.0.1", registry=self.registry
            )
        except OSError as exc:
            log.error("metrics: cannot serve on 127.0.0.1:%s: %s", self.settings.metrics_port, exc)
            return
        log.info("metrics: serving /metrics on 127.0.0.1:%s", self.settings.metrics_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._client is not None:
            self._client.disconnect()
            self._client = None

    # --- event path (called by the agents) -----------------------------------------------

    def counted(
        self,
        outcome: BatchOutcome,
        raw_timestamps: Mapping[tuple[int, int], float],
        late: Iterable[tuple[Record, str, int]] = (),
    ) -> None:
        """Account one counting batch after ClickHouse has it (so "counted" is durable).

        ``raw_timestamps``: (partition, offset) of each bundle -> oldest raw Kafka time
        (s); ``late``: its newly counted events whose week was already finalized. A
        failure here is logged, never raised: counting matters more.
        """
        if not self.enabled:
            return
        try:
            self.record(summarize(outcome, raw_timestamps, late))
        except Exception:
            log.exception("metrics: accounting a counted batch failed")

    def record(self, summary: CountSummary) -> None:
        """Add what counting did, here or in a counting process (:mod:`streams.count_pool`)."""
        if not self.enabled:
            return
        for source, (counts, total) in summary.latency.items():
            self.latency.add(source, counts, total)
        for labels, n in summary.accepted.items():
            self.accepted.labels(*labels).inc(n)
        for kind, n in summary.late.items():
            self._late[kind].inc(n)
        if summary.duplicates:
            self.duplicates.inc(summary.duplicates)
        for table, rows, seconds in summary.inserts:
            self.inserted(table, rows, seconds)
        for _ in range(summary.failures):
            self.failed()

    # SinkObserver (streams/sink.py); called from the sink's thread.
    def inserted(self, table: str, rows: int, seconds: float) -> None:
        if self.enabled and table in self._write:
            duration, size = self._write[table]
            duration.observe(seconds)
            size.observe(rows)

    def failed(self) -> None:
        if self.enabled:
            self.write_failures.inc()

    # --- periodic refresh (runs in a thread) ---------------------------------------------

    def refresh(self, now: datetime | None = None) -> None:
        """Recompute the gauges from ClickHouse and Kafka; each part fails on its own."""
        from streams.progress import lags

        at = now or datetime.now(UTC)
        parts: list[tuple[str, Callable[[], None]]] = [
            ("finalized", lambda: self._refresh_finalized(at)),
            ("counts", lambda: self._refresh_counts(at)),
            ("terminals", lambda: self._refresh_terminals(at)),
            ("lag", lambda: self._set_lags(lags(self.settings, t) for t in self._lag_topics())),
        ]
        for part, action in parts:
            try:
                action()
            except Exception as exc:  # one broken part must not stop the others
                self.refresh_errors.labels(part).inc()
                log.warning("metrics: refreshing %s failed: %s", part, exc)
                if part != "lag" and self._client is not None:
                    self._client.disconnect()

    def _lag_topics(self) -> tuple[str, str]:
        return (self.settings.topic, self.settings.by_id_topic)

    def _ch(self) -> Client:
        if self._client is None:
            client = connect(self.settings)
            ensure_schema(self.settings, client)
            self._client = client
        return self._client

    def _refresh_finalized(self, now: datetime) -> None:
        weeks = finalized_weeks(self._ch(), self.settings)
        if self._finalized_weeks is not None:
            self._finalized_weeks.versions = weeks
        if weeks:
            end = max(weeks).closes_at(self.settings.zone)
            self.last_finalized.set(end.timestamp())
            self.last_finalized_age.set((now - end).total_seconds())
        else:
            self.last_finalized.set(0)
            self.last_finalized_age.set(0)

    def _refresh_counts(self, now: datetime) -> None:
        counts = live_counts(self._ch(), self.settings, now)
        halls = {hall for _, _, hall in counts}
        wanted = {(p, t.value, h) for p in PERIODS for t in COUNTED_TYPES for h in halls}
        # Labels seen before but absent now (a new day, week or year) read 0, not stale.
        for labels in wanted | self._count_labels:
            self.period_events.labels(*labels).set(counts.get(labels, 0))
        self._count_labels |= wanted

    def _refresh_terminals(self, now: datetime) -> None:
        windows = window_activity(self._ch(), self.settings, now)
        last: dict[str, datetime] = {}
        silent: Tally[str] = Tally()
        for w in windows:
            last[w.hall_id] = max(last.get(w.hall_id, w.last_seen), w.last_seen)
            silent[w.hall_id] += w.silent(now, self.settings.terminal_silence_seconds)
        for hall in self._halls - set(last):  # not seen within the horizon: unwatched
            self.terminal_last_seen.remove(hall)
            self.terminals_silent.remove(hall)
        for hall, seen in last.items():
            self.terminal_last_seen.labels(hall).set(seen.timestamp())
            self.terminals_silent.labels(hall).set(silent[hall])
        self._halls = set(last)

    def _set_lags(self, per_topic: Iterable[Iterable[Any]]) -> None:
        for lags in per_topic:
            for lag in lags:
                self.lag.labels(lag.topic, str(lag.partition)).set(lag.behind)
