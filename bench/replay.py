"""End-to-end replay rate vs a plain confluent-kafka consumer on the same topic.

Emits the calibrated sample year to a fresh topic, runs one worker, and times
first emit -> finalized 2024-W50. The baseline is a bare confluent-kafka
consumer reading the same topic start to end (no parsing, no state): the
ratio says how much of the raw broker read rate the exact pipeline keeps.
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from consumers.finalize import finalize
from deploy import stack
from hallstats import sample
from hallstats.demo import start_worker, stop_worker
from hallstats.emit import emit_file, ensure_topics
from hallstats.settings import Settings
from schemas.calendar import IsoWeek


def plain_consume_rate(settings: Settings, expected: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-plain-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(settings.topic, timeout=10).topics[settings.topic]
    consumer.assign([TopicPartition(settings.topic, p, 0) for p in meta.partitions])
    seen = 0
    started = time.monotonic()
    while seen < expected:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error() is None:
                seen += 1
    elapsed = time.monotonic() - started
    consumer.close()
    return seen / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=".stack/bench")
    args = parser.parse_args()
    base = Settings()
    stack.up(base, progress=lambda m: None)
    settings = base.isolated("bench", Path(args.workdir), worker_web_port=6099)
    data = Path(args.workdir) / "sample-2024.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        sample.write_jsonl(data, sample.SampleSpec())
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    log = Path(args.workdir) / f"worker-{settings.app_id}.log"
    proc = start_worker(settings, log, env=settings.as_env())
    try:
        started = time.monotonic()
        report = emit_file(data, settings, validate=False)
        emitted = time.monotonic() - started
        result = finalize(settings, IsoWeek.parse("2024-W50"), timeout=3600)
        total = time.monotonic() - started
    finally:
        stop_worker(proc)
    pipeline_rate = report.sent / total
    plain_rate = plain_consume_rate(settings, report.sent)
    print(f"events sent:                 {report.sent}")
    print(f"emit only:                   {emitted:.1f} s ({report.sent / emitted:,.0f} events/s)")
    print(f"first emit -> finalized:     {total:.1f} s ({pipeline_rate:,.0f} events/s)")
    print(f"plain confluent consumer:    {plain_rate:,.0f} events/s")
    print(f"ratio pipeline/plain:        {pipeline_rate / plain_rate:.3f}")
    print(f"2024-W50 weekly {result.snapshot.weekly.as_dict()}")
    print(f"2024-W50 ytd    {result.snapshot.year_to_date.as_dict()}")


if __name__ == "__main__":
    main()
