"""What counting batches tell the metrics, as one small picklable value.

A counting process that is not the one serving ``/metrics`` (see
:mod:`streams.count_pool`) cannot touch the Prometheus registry. It folds each
batch into a :class:`CountSummary` instead, a few counters whose size depends on
the labels seen, never on the events, and the serving process adds it to its
metrics (:meth:`streams.metrics.WorkerMetrics.record`). The in-process path goes
through the same summary, so both report the same figures by construction.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from streams.bundles import INDEX_BITS
from streams.ledger import BatchOutcome, Record
from streams.stage_stats import bucket_counts

#: Upper bounds (seconds) of ``hallstats_event_latency_seconds``; +Inf is added.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
LATENCY_SOURCES = ("occurred_at", "kafka_timestamp")


@dataclass
class CountSummary:
    """Counted batches, summed: labels -> counts, latency buckets, ClickHouse writes."""

    accepted: Tally[tuple[str, str, str]] = field(default_factory=Tally)  # type, hall, dept
    late: Tally[str] = field(default_factory=Tally)  # event type
    duplicates: int = 0
    #: source -> (count per bucket of LATENCY_BUCKETS + Inf, sum of seconds)
    latency: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    inserts: list[tuple[str, int, float]] = field(default_factory=list)  # table, rows, seconds
    failures: int = 0

    def add_latency(self, source: str, counts: list[int], total: float) -> None:
        found = self.latency.get(source)
        if found is None:
            self.latency[source] = (counts, total)
        else:
            self.latency[source] = (
                [a + b for a, b in zip(found[0], counts, strict=True)],
                found[1] + total,
            )

    def merge(self, other: CountSummary) -> None:
        self.accepted.update(other.accepted)
        self.late.update(other.late)
        self.duplicates += other.duplicates
        for source, (counts, total) in other.latency.items():
            self.add_latency(source, counts, total)
        self.inserts += other.inserts
        self.failures += other.failures


def summarize(
    outcome: BatchOutcome,
    raw_timestamps: Mapping[tuple[int, int], float],
    late: Iterable[tuple[Record, str, int]] = (),
    now: float | None = None,
) -> CountSummary:
    """One batch: ``raw_timestamps`` = (partition, offset) of a bundle -> oldest raw
    Kafka time (s); ``late`` = the newly counted events whose week was finalized."""
    at = time.time() if now is None else now
    counted = outcome.newly_counted
    # Whole-batch passes (Counter counts in C): this runs for every counted event. Keys
    # hold the enum itself (its .value is a slow descriptor) until the few distinct ones.
    by_combo = Tally((r.event.event_type, r.event.hall_id, r.event.department) for r in counted)
    summary = CountSummary(
        accepted=Tally({(t.value, hall, dept): n for (t, hall, dept), n in by_combo.items()}),
        late=Tally(r.event.event_type.value for r, _week, _version in late),
        duplicates=len(outcome.duplicates),
    )
    from_occurred = [max(0.0, at - r.event.occurred_at.timestamp()) for r in counted]
    if from_occurred:
        summary.add_latency(
            LATENCY_SOURCES[0], bucket_counts(LATENCY_BUCKETS, from_occurred), sum(from_occurred)
        )
    # Every event of a bundle has the bundle's raw Kafka time: one value per bundle.
    per_bundle = Tally((r.shard, r.position >> INDEX_BITS) for r in counted)
    from_kafka = {
        key: (max(0.0, at - sent), n)
        for key, n in per_bundle.items()
        if (sent := raw_timestamps.get(key)) is not None
    }
    if from_kafka:
        latencies = [latency for latency, _n in from_kafka.values()]
        weights = [n for _latency, n in from_kafka.values()]
        summary.add_latency(
            LATENCY_SOURCES[1],
            bucket_counts(LATENCY_BUCKETS, latencies, weights),
            sum(latency * n for latency, n in from_kafka.values()),
        )
    return summary


class SummaryRecorder:
    """A counting observer that keeps what it is told until :meth:`drain` hands it on;
    ``urgent`` gets a failed ClickHouse write at once (with whatever was kept)."""

    def __init__(self, urgent: Callable[[CountSummary], None] | None = None) -> None:
        self._summary = CountSummary()
        self._urgent = urgent

    def counted(
        self,
        outcome: BatchOutcome,
        raw_timestamps: Mapping[tuple[int, int], float],
        late: Iterable[tuple[Record, str, int]] = (),
    ) -> None:
        self._summary.merge(summarize(outcome, raw_timestamps, late))

    def inserted(self, table: str, rows: int, seconds: float) -> None:
        self._summary.inserts.append((table, rows, seconds))

    def failed(self) -> None:
        self._summary.failures += 1
        if self._urgent is not None:
            self._urgent(self.drain())

    def drain(self) -> CountSummary:
        summary, self._summary = self._summary, CountSummary()
        return summary
