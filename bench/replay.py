"""End-to-end replay rate vs a plain confluent-kafka consumer on the same topic.

Emits the calibrated sample year to a fresh topic, runs one worker, and times
first emit -> finalized 2024-W50. The baseline is the one issue 8 states: a
plain confluent-kafka consumer reading the same topic start to end and decoding
each message with ``json.loads`` (no validation, no state), measured right after
the pipeline. A bare read without ``json.loads`` is printed too, with its ratio,
as a stricter reference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumers.finalize import finalize
from deploy import stack
from hallstats.cli.demo import start_worker, stop_worker
from hallstats.kafka import consumer_config, ensure_topics
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from terminals import sample
from terminals.emit import emit_file


def plain_consume_rate(settings: Settings, expected: int, *, decode: bool) -> float:
    """Messages per second of one consumer reading the topic; ``decode``: ``json.loads``
    each value (issue 8's baseline), else only check it arrived."""
    consumer = Consumer(consumer_config(settings, f"bench-plain-{uuid.uuid4().hex[:8]}"))
    meta = consumer.list_topics(settings.topic, timeout=10).topics[settings.topic]
    consumer.assign([TopicPartition(settings.topic, p, 0) for p in meta.partitions])
    seen = 0
    started = time.monotonic()
    while seen < expected:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error() is None:
                seen += 1
                if decode:
                    with contextlib.suppress(ValueError):  # the sample's malformed messages
                        json.loads(msg.value() or b"")
    elapsed = time.monotonic() - started
    consumer.close()
    return seen / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


def processes(settings: Settings, workers: list[int]) -> dict[str, int]:
    """The pids whose CPU the run spends: services, workers and their children."""
    found = {}
    for n, pid in enumerate(workers):
        found[f"worker {n} main (Faust)"] = pid
        for child in descendants(pid):
            with contextlib.suppress(OSError):  # children name themselves (prctl)
                name = f"worker {n} {Path(f'/proc/{child}/comm').read_text().strip()}"
                found[f"{name} (pid {child})" if name in found else name] = child
    root = settings.stack_dir.expanduser().resolve()
    for name in ("kafka", "clickhouse"):
        with contextlib.suppress(OSError, ValueError):
            found[name] = int((root / name / f"{name}.pid").read_text())
    return found


def stage_rates(settings: Settings) -> dict[str, tuple[float, float]]:
    """Per stage: (events, busy seconds), from the worker's own /metrics."""
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    events: dict[str, float] = {}
    busy: dict[str, float] = {}
    writes = {table: [0.0, 0.0] for table in ("events", "counters")}  # rows, seconds
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            stage, table = point.labels.get("stage"), point.labels.get("table", "")
            if point.name == "hallstats_stage_events_total" and stage:
                events[stage] = events.get(stage, 0.0) + point.value
            elif point.name == "hallstats_stage_busy_seconds_total" and stage:
                busy[stage] = busy.get(stage, 0.0) + point.value
            elif table in writes and point.name == "hallstats_clickhouse_batch_rows_sum":
                writes[table][0] += point.value
            elif table in writes and point.name == "hallstats_clickhouse_write_seconds_sum":
                writes[table][1] += point.value
    result = {stage: (events[stage], busy.get(stage, 0.0)) for stage in events}
    result["clickhouse writes (archive rows)"] = (writes["events"][0], writes["events"][1])
    result["clickhouse writes (counter rows)"] = (writes["counters"][0], writes["counters"][1])
    return result


def settled_stage_rates(settings: Settings) -> dict[str, tuple[float, float]]:
    """The stage rates once they stop moving: a counting process's last answer (with
    its ClickHouse write figures) may reach ``/metrics`` just after finalize returns."""
    rates = stage_rates(settings)
    for _ in range(10):
        time.sleep(1.0)
        again = stage_rates(settings)
        if again == rates:
            break
        rates = again
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=".stack/bench")
    parser.add_argument(
        "--count-processes",
        type=int,
        default=Settings.model_fields["worker_count_processes"].default,
        help="HALLSTATS_WORKER_COUNT_PROCESSES of the worker (default: its default)",
    )
    args = parser.parse_args()
    base = Settings()
    stack.up(base, progress=lambda m: None)
    settings = base.isolated(
        "bench",
        Path(args.workdir),
        worker_web_port=6099,
        worker_count_processes=args.count_processes,
    )
    data = Path(args.workdir) / "sample-2024.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        sample.write_jsonl(data, sample.SampleSpec())
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    log = Path(args.workdir) / f"worker-{settings.app_id}.log"
    proc = start_worker(settings, log, env=settings.as_env())
    wanted = {  # name prefix -> how many (the finalizer names itself too)
        " hs-intake": settings.worker_intake_processes,
        " hs-count-": settings.worker_count_processes if settings.worker_count_processes > 1 else 0,
    }
    deadline = time.monotonic() + 60
    while True:
        pids = processes(base, [proc.pid])
        if all(sum(p in name for name in pids) >= n for p, n in wanted.items()):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker's processes did not all start; see {log}")
        time.sleep(0.5)  # children name themselves once started (prctl)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    try:
        started = time.monotonic()
        report = emit_file(data, settings, validate=False)
        emitted = time.monotonic() - started
        result = finalize(settings, IsoWeek.parse("2024-W50"), timeout=3600)
        total = time.monotonic() - started
        stages = settled_stage_rates(settings)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    finally:
        stop_worker(proc)
    pipeline_rate = report.sent / total
    plain_rate = plain_consume_rate(settings, report.sent, decode=True)
    bare_rate = plain_consume_rate(settings, report.sent, decode=False)
    print(f"events sent:                 {report.sent}")
    print(f"emit only:                   {emitted:.1f} s ({report.sent / emitted:,.0f} events/s)")
    print(f"first emit -> finalized:     {total:.1f} s ({pipeline_rate:,.0f} events/s)")
    print(f"plain consumer + json.loads: {plain_rate:,.0f} events/s")
    print(f"bare read (no json.loads):   {bare_rate:,.0f} events/s")
    print(f"ratio pipeline/plain:        {pipeline_rate / plain_rate:.3f}")
    print(f"ratio pipeline/bare read:    {pipeline_rate / bare_rate:.3f}")
    print("per stage (events / seconds busy in that stage; wall time shared by all):")
    for stage, (events, busy) in stages.items():
        rate = events / busy if busy else 0.0
        print(f"  {stage:<32} {events:>9,.0f} events in {busy:7.1f} s busy = {rate:>9,.0f}/s")
    print(f"CPU seconds during the run ({total:.1f} s wall, {os.cpu_count()} cores):")
    for name, seconds in cpu.items():
        if seconds < 0.05:  # the fork server, multiprocessing's resource tracker
            continue
        print(f"  {name:<32} {seconds:7.1f} s = {seconds / total:5.0%} of one core")
    print(f"2024-W50 weekly {result.snapshot.weekly.as_dict()}")
    print(f"2024-W50 ytd    {result.snapshot.year_to_date.as_dict()}")


if __name__ == "__main__":
    main()
