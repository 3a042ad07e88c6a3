"""Worker metrics without a broker: what each hook counts, label bounds, isolation."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from hallstats.cli.status import rates
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import EventType
from schemas.events import ServiceEvent
from schemas.rejections import RejectReason
from streams.bundles import position
from streams.lateness import FinalizedWeeks
from streams.ledger import BatchOutcome, Record, SeenRecord
from streams.metrics import WorkerMetrics
from streams.stage_stats import StageTallies
from tests.support.promserver import grafana_to_promql, metric_names
from tests.support.services import free_port


def value(m: WorkerMetrics, name: str, **labels: str) -> float:
    found = m.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def record(n: int, kind: str = "accept", hall: str = "h1", when: datetime | None = None) -> Record:
    event = ServiceEvent(
        event_id=f"00000000-0000-4000-8000-{n:012d}",
        event_type=EventType(kind),
        occurred_at=when or datetime.now(UTC) - timedelta(seconds=30),
        hall_id=hall,
        window_id="W01",
        department="民政厅",
    )
    return Record(shard=1, position=position(7, n), event=event)


def bundle(raw_timestamp: float) -> dict[tuple[int, int], float]:
    """The bundle that carried the records (partition 1, offset 7) and its raw time."""
    return {(1, 7): raw_timestamp}


def test_counted_tallies_by_bounded_labels_and_observes_latency() -> None:
    m = WorkerMetrics(Settings(metrics_port=1))
    outcome = BatchOutcome(
        newly_counted=[record(1), record(2), record(3, "consult", "h2")],
        duplicates=[record(4)],
        conflicts=[(record(5), SeenRecord("x", 0))],
    )
    m.counted(outcome, bundle(time.time() - 5))
    accepted = "hallstats_events_accepted_total"
    assert value(m, accepted, type="accept", hall="h1", department="民政厅") == 2
    assert value(m, accepted, type="consult", hall="h2", department="民政厅") == 1
    assert value(m, "hallstats_duplicates_dropped_total") == 1
    latency = "hallstats_event_latency_seconds"
    assert value(m, f"{latency}_count", source="occurred_at") == 3
    assert 29 < value(m, f"{latency}_sum", source="occurred_at") / 3 < 60
    # From the raw message's timestamp (the bundle's header, see streams.bundles).
    assert value(m, f"{latency}_count", source="kafka_timestamp") == 3
    assert 4.5 < value(m, f"{latency}_sum", source="kafka_timestamp") / 3 < 30
    label_names = {
        name
        for family in m.registry.collect()
        for sample in family.samples
        for name in sample.labels
    }
    assert label_names <= {"type", "hall", "department", "reason", "source", "period", "topic"} | {
        "partition",
        "table",
        "part",
        "le",
        "stage",
    }


def test_bundle_raw_timestamp_header_falls_back_to_the_bundle_time() -> None:
    from streams.bundles import RAW_TIMESTAMP_HEADER, raw_timestamp_ms

    assert raw_timestamp_ms([(RAW_TIMESTAMP_HEADER, b"1700")], 2000) == 1700
    assert raw_timestamp_ms({RAW_TIMESTAMP_HEADER: b"1700"}, 2000) == 1700
    assert raw_timestamp_ms(None, 2000) == 2000
    assert raw_timestamp_ms([(RAW_TIMESTAMP_HEADER, b"x")], 2000) == 2000


def test_a_metrics_failure_never_reaches_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    m = WorkerMetrics(Settings(metrics_port=1))
    m.counted(BatchOutcome(newly_counted=[record(1)]), {(1, 7): "not a time"})  # type: ignore[dict-item]
    assert "accounting a counted batch failed" in caplog.text
    m.counted(BatchOutcome(newly_counted=[record(1)]), {})
    assert value(m, "hallstats_event_latency_seconds_count", source="occurred_at") == 1


def test_late_events_are_those_of_a_finalized_week() -> None:
    settings = Settings(metrics_port=1)
    m = WorkerMetrics(settings)
    finalized = FinalizedWeeks(settings)
    finalized.versions = {IsoWeek.parse("2024-W50"): 1}
    in_w50 = datetime(2024, 12, 15, 15, 59, tzinfo=UTC)  # Sunday 23:59 in Shanghai
    in_w51 = datetime(2024, 12, 15, 16, 0, tzinfo=UTC)  # Monday 00:00 in Shanghai
    counted = [record(1, "issue", when=in_w50), record(2, when=in_w51)]
    m.counted(BatchOutcome(newly_counted=counted), {}, finalized.late(counted, settings.zone))
    assert value(m, "hallstats_late_events_total", type="issue") == 1
    assert value(m, "hallstats_late_events_total", type="accept") == 0


def test_rejections_stage_tallies_and_sink_hooks() -> None:
    intake, count = StageTallies("intake", shared=True), StageTallies("count")
    m = WorkerMetrics(Settings(metrics_port=1), stages=[intake, count])
    intake.rejected(RejectReason.INVALID_JSON)
    intake.rejected(RejectReason.INVALID_JSON)
    count.rejected(RejectReason.CONFLICTING_DUPLICATE)
    intake.batch(messages=10, events=8, seconds=0.5)
    count.batch(messages=2, events=8, seconds=0.25)
    assert value(m, "hallstats_events_rejected_total", reason="conflicting_duplicate") == 1
    assert value(m, "hallstats_stage_messages_total", stage="intake") == 10
    assert value(m, "hallstats_stage_events_total", stage="count") == 8
    assert value(m, "hallstats_stage_busy_seconds_total", stage="count") == 0.25
    assert value(m, "hallstats_stage_batches_total", stage="intake") == 1
    m.inserted("events", 120, 0.02)
    m.failed()
    assert value(m, "hallstats_events_rejected_total", reason="invalid_json") == 2
    # Every reason is exported from the start, so rate() works before the first rejection.
    assert (
        m.registry.get_sample_value(
            "hallstats_events_rejected_total", {"reason": "oversize_message"}
        )
        == 0
    )
    assert value(m, "hallstats_clickhouse_batch_rows_sum", table="events") == 120
    assert value(m, "hallstats_clickhouse_write_seconds_count", table="events") == 1
    assert value(m, "hallstats_clickhouse_write_failures_total") == 1


def test_disabled_metrics_do_nothing_and_serve_nothing() -> None:
    m = WorkerMetrics(Settings(metrics_port=0))
    assert not m.enabled
    m.stages[0].rejected(RejectReason.INVALID_JSON)
    m.counted(BatchOutcome(newly_counted=[record(1)]), {})
    m.failed()
    m.serve()
    assert m._server is None
    assert value(m, "hallstats_events_rejected_total", reason="invalid_json") == 0


def test_each_app_has_its_own_registry() -> None:
    a, b = WorkerMetrics(Settings(metrics_port=1)), WorkerMetrics(Settings(metrics_port=1))
    a.failed()
    assert value(a, "hallstats_clickhouse_write_failures_total") == 1
    assert value(b, "hallstats_clickhouse_write_failures_total") == 0
    shared = CollectorRegistry()
    WorkerMetrics(Settings(metrics_port=1), registry=shared)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics(Settings(metrics_port=1), registry=shared)


def test_serves_on_loopback_and_a_taken_port_is_not_fatal() -> None:
    port = free_port()
    m = WorkerMetrics(Settings(metrics_port=port))
    m.serve()
    try:
        m.failed()
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert "hallstats_clickhouse_write_failures_total 1.0" in text
        other = WorkerMetrics(Settings(metrics_port=port))
        other.serve()  # logs an error, keeps going
        assert other._server is None
    finally:
        m.close()


def test_status_rates_between_two_scrapes() -> None:
    def scrape(
        accepted: float, rejected: float
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (
                "hallstats_events_accepted_total",
                (("department", "d"), ("hall", "h"), ("type", "accept")),
            ): accepted,
            ("hallstats_events_rejected_total", (("reason", "invalid_json"),)): rejected,
        }

    got = rates(scrape(10, 1), scrape(30, 5), 2.0)
    assert got == {
        "consult": 0,
        "accept": 10.0,
        "issue": 0,
        "transfer": 0,
        "dlq": 2.0,
        "duplicates": 0,
    }
    # A counter that went down: the worker restarted, the new value is the increase.
    assert rates(scrape(30, 5), scrape(4, 5), 2.0)["accept"] == 2.0


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (type) (rate(hallstats_events_accepted_total{hall=~"a"}[5m]))',
            {"hallstats_events_accepted_total"},
        ),
        (
            "time() - max(hallstats_last_finalized_week_timestamp_seconds) > 9 * 86400 "
            "and max(hallstats_last_finalized_week_timestamp_seconds) > 0",
            {"hallstats_last_finalized_week_timestamp_seconds"},
        ),
        (
            "(sum(rate(a_total[30m])) or vector(0)) == 0 and on () (hour() * 60 + minute() >= 90)",
            {"a_total"},
        ),
        ("histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m] offset 5m)))", {"x_bucket"}),
        ('up{job="hallstats"} == 0', {"up"}),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_variables_are_substituted() -> None:
    expr = 'rate(x{hall=~"$hall"}[$__rate_interval])'
    assert grafana_to_promql(expr) == 'rate(x{hall=~".*"}[1m])'
