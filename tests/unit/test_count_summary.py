"""Counting's metrics as summaries: what a counting process hands to ``/metrics``.

The pool (streams.count_pool) splits a batch between processes; the figures
operations see must not depend on how it was split.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hallstats.settings import Settings
from schemas.catalog import EventType
from schemas.events import ServiceEvent
from streams.bundles import position
from streams.count_summary import CountSummary, SummaryRecorder, summarize
from streams.ledger import BatchOutcome, Record
from streams.metrics import WorkerMetrics
from streams.stage_stats import StageCollector, StageTallies, bucket_counts

NOW = datetime(2024, 12, 12, 8, 0, tzinfo=UTC)

records = st.builds(
    lambda n, kind, hall, age, offset: Record(
        shard=n % 3,
        position=position(offset, n),
        event=ServiceEvent(
            event_id=f"00000000-0000-4000-8000-{n:012d}",
            event_type=kind,
            occurred_at=NOW - timedelta(seconds=age),
            hall_id=hall,
            window_id="W01",
            department="民政厅",
        ),
    ),
    st.integers(0, 10_000),
    st.sampled_from([EventType.CONSULT, EventType.ACCEPT, EventType.ISSUE]),
    st.sampled_from(["h1", "h2"]),
    st.floats(0, 200_000),
    st.integers(0, 5),
)


def raw_times(batch: list[Record]) -> dict[tuple[int, int], float]:
    return {(r.shard, r.position >> 16): NOW.timestamp() - 3 for r in batch}


@given(st.lists(records, max_size=40), st.lists(records, max_size=10), st.integers(0, 40))
def test_a_batch_split_anywhere_sums_to_the_same_summary(
    counted: list[Record], duplicates: list[Record], cut: int
) -> None:
    def summary_of(part: list[Record], dups: list[Record]) -> CountSummary:
        outcome = BatchOutcome(newly_counted=part, duplicates=dups)
        return summarize(
            outcome,
            raw_times(part),
            late=[(r, "2024-W50", 1) for r in part[:2]],
            now=NOW.timestamp(),
        )

    whole = summary_of(counted, duplicates)
    split = summary_of(counted[:cut], duplicates)
    split.merge(summary_of(counted[cut:], []))
    assert split.accepted == whole.accepted
    assert split.duplicates == whole.duplicates
    assert {k: v for k, v in split.latency.items()} == {
        k: (counts, _approx(total, split.latency[k][1]))
        for k, (counts, total) in whole.latency.items()
    }


def _approx(expected: float, got: float) -> float:
    """Sums of floats in another order: equal to within rounding, then ``got`` itself."""
    assert abs(expected - got) <= 1e-6 * max(1.0, abs(expected))
    return got


def test_recorded_summaries_give_the_metrics_of_counting_in_process() -> None:
    batch = [
        Record(
            1,
            position(7, i),
            ServiceEvent(
                event_id=f"00000000-0000-4000-8000-{i:012d}",
                event_type=EventType.ACCEPT,
                occurred_at=datetime.now(UTC) - timedelta(seconds=30),
                hall_id="h1",
                window_id="W01",
                department="民政厅",
            ),
        )
        for i in range(5)
    ]
    outcome = BatchOutcome(newly_counted=batch[:4], duplicates=batch[4:])
    direct, relayed = (
        WorkerMetrics(Settings(metrics_port=1)),
        WorkerMetrics(Settings(metrics_port=1)),
    )
    sent = {(1, 7): time.time() - 3}  # the bundle's raw Kafka time
    direct.counted(outcome, sent)
    direct.inserted("events", 4, 0.01)
    recorder = SummaryRecorder()
    recorder.counted(outcome, sent)
    recorder.inserted("events", 4, 0.01)
    relayed.record(recorder.drain())
    assert recorder.drain() == CountSummary()  # drained: nothing counted twice
    for name, labels in [
        (
            "hallstats_events_accepted_total",
            {"type": "accept", "hall": "h1", "department": "民政厅"},
        ),
        ("hallstats_duplicates_dropped_total", {}),
        ("hallstats_event_latency_seconds_count", {"source": "occurred_at"}),
        ("hallstats_event_latency_seconds_bucket", {"source": "kafka_timestamp", "le": "5.0"}),
        ("hallstats_clickhouse_batch_rows_sum", {"table": "events"}),
    ]:
        got = relayed.registry.get_sample_value(name, labels)
        assert got == direct.registry.get_sample_value(name, labels), name
        assert got


def test_a_stage_in_several_processes_is_one_series() -> None:
    a, b, intake = StageTallies("count", shared=True), StageTallies("count"), StageTallies("intake")
    a.batch(messages=2, events=10, seconds=0.5)
    b.batch(messages=3, events=20, seconds=0.25)
    families = {f.name: f for f in StageCollector([intake, a, b]).collect()}
    events = {s.labels["stage"]: s.value for s in families["hallstats_stage_events"].samples}
    assert events == {"count": 30, "intake": 0}


@given(st.lists(st.tuples(st.floats(0, 1e6), st.integers(1, 50)), max_size=30))
def test_weighted_buckets_count_each_value_as_often_as_its_weight(
    pairs: list[tuple[float, int]],
) -> None:
    buckets = (0.5, 1, 10, 1000)
    expanded = [value for value, n in pairs for _ in range(n)]
    weighted = bucket_counts(buckets, [v for v, _n in pairs], [n for _v, n in pairs])
    assert weighted == bucket_counts(buckets, expanded)


def test_a_failed_write_is_handed_on_at_once_with_what_was_kept() -> None:
    sent: list[CountSummary] = []
    recorder = SummaryRecorder(urgent=sent.append)
    recorder.inserted("events", 10, 0.01)
    recorder.failed()
    assert [(s.failures, s.inserts) for s in sent] == [(1, [("events", 10, 0.01)])]
    assert recorder.drain() == CountSummary()
