"""Per-stage tallies that Prometheus reads at scrape time.

The intake stage usually runs in a child process of ``hallstats worker``, so
its tallies live in shared memory (:func:`multiprocessing.Array`) that the
parent's registry reads through a custom collector: no second port, and no
metric of the same name registered twice. Counters only grow; a restarted
process starts from 0, which ``rate()`` handles.
"""

from __future__ import annotations

import bisect
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableSequence
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from schemas.rejections import RejectReason

_REASONS = list(RejectReason)
#: How prometheus_client itself prints bucket bounds ("0.05", "1.0", "+Inf").
_go_float = cast(Callable[[float], str], floatToGoString)
_MESSAGES, _EVENTS, _BATCHES, _BUSY, _BEAT = range(5)
_SIZE = 5 + len(_REASONS)


class StageTallies:
    """messages in, events out, batches and busy seconds of one stage, plus rejections."""

    def __init__(self, stage: str, *, shared: bool = False) -> None:
        self.stage = stage
        self._slots: MutableSequence[float] = (
            multiprocessing.Array("d", _SIZE, lock=False) if shared else [0.0] * _SIZE
        )

    def rejected(self, reason: RejectReason, n: int = 1) -> None:
        self._slots[5 + _REASONS.index(reason)] += n

    def beat(self) -> None:
        """The stage's loop is turning (``time.monotonic``, the same clock in every process)."""
        self._slots[_BEAT] = time.monotonic()

    def last_beat(self) -> float:
        """When the loop last turned; 0.0 before its first turn."""
        return float(self._slots[_BEAT])

    def batch(self, messages: int, events: int, seconds: float) -> None:
        slots = self._slots
        slots[_MESSAGES] += messages
        slots[_EVENTS] += events
        slots[_BATCHES] += 1
        slots[_BUSY] += seconds

    def value(self, name: str) -> float:
        return float(self._slots[{"messages": 0, "events": 1, "batches": 2, "busy": 3}[name]])

    def rejections(self) -> dict[RejectReason, float]:
        return {r: float(self._slots[5 + i]) for i, r in enumerate(_REASONS)}


class StageCollector(Collector):
    """``hallstats_stage_*_total`` per stage and ``hallstats_events_rejected_total``.

    Rejections are summed over the stages: validation reasons come from intake,
    ``conflicting_duplicate`` from counting. Every reason is exported from 0.
    """

    def __init__(self, stages: list[StageTallies]) -> None:
        self._stages = stages

    def collect(self) -> Iterator[Any]:
        families = {
            "messages": CounterMetricFamily(
                "hallstats_stage_messages",
                "Kafka messages a stage has processed (raw messages; bundles for count).",
                labels=["stage"],
            ),
            "events": CounterMetricFamily(
                "hallstats_stage_events",
                "Events a stage has passed on (intake: forwarded valid; count: applied).",
                labels=["stage"],
            ),
            "batches": CounterMetricFamily(
                "hallstats_stage_batches", "Batches a stage has completed.", labels=["stage"]
            ),
            "busy": CounterMetricFamily(
                "hallstats_stage_busy_seconds",
                "Seconds a stage spent working on batches (not waiting for input).",
                labels=["stage"],
            ),
        }
        stages = sorted({t.stage for t in self._stages})  # a stage may run in several processes
        for name, family in families.items():
            for stage in stages:
                total = sum(t.value(name) for t in self._stages if t.stage == stage)
                family.add_metric([stage], total)
        yield from families.values()
        rejected = CounterMetricFamily(
            "hallstats_events_rejected",
            "Messages sent to the DLQ, by reason (validation or conflicting duplicate).",
            labels=["reason"],
        )
        per_stage = [t.rejections() for t in self._stages]
        for reason in _REASONS:
            rejected.add_metric([reason.value], sum(r[reason] for r in per_stage))
        yield rejected


def bucket_counts(
    buckets: tuple[float, ...] | list[float],
    values: list[float],
    weights: list[int] | None = None,
) -> list[int]:
    """How many values fall in each bucket (upper bounds ``buckets``, then +Inf);
    ``weights``: how many times each value was seen (default once)."""
    bounds = [*buckets, float("inf")]
    counts = [0] * len(bounds)
    if weights is None:
        for index, n in Counter(bisect.bisect_left(bounds, v) for v in values).items():
            counts[index] = n
    else:
        for v, n in zip(values, weights, strict=True):
            counts[bisect.bisect_left(bounds, v)] += n
    return counts


class BatchHistogram(Collector):
    """A labelled histogram fed bucket counts of a whole batch (:func:`bucket_counts`,
    made where the batch is counted), one lock per batch.

    ``prometheus_client.Histogram.observe`` takes a lock per value; the counting
    stage observes two latencies for every event, which cost more than counting it.
    """

    def __init__(
        self, name: str, documentation: str, label: str, buckets: tuple[float, ...]
    ) -> None:
        self._name, self._doc, self._label = name, documentation, label
        self._bounds = [*buckets, float("inf")]
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def add(self, label_value: str, counts: list[int], total: float) -> None:
        """Counts per bucket (as :func:`bucket_counts` makes them) and their sum."""
        with self._lock:
            mine, sums = self._series.setdefault(label_value, ([0] * len(self._bounds), [0.0]))
            for index, n in enumerate(counts):
                mine[index] += n
            sums[0] += total

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily(self._name, self._doc, labels=[self._label])
        with self._lock:
            series = {k: (list(c), s[0]) for k, (c, s) in self._series.items()}
        for value, (counts, total) in series.items():
            cumulative, buckets = 0, []
            for bound, n in zip(self._bounds, counts, strict=True):
                cumulative += n
                buckets.append((_go_float(bound), cumulative))
            family.add_metric([value], buckets, total)
        yield family
