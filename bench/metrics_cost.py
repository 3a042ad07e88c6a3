"""What Prometheus metrics cost the worker: throughput with vs without, same run.

Each run gets its own topic, app id (consumer group) and ClickHouse database,
and the same events (the first N lines of the calibrated sample year, with
its re-sends and invalid lines), loaded into Kafka *before* the worker starts.
The clock runs from the worker's first commit to both stages caught up, so
start-up and recovery are left out. Three configurations: "without" is
HALLSTATS_METRICS_PORT=0; "hallstats only" serves the hallstats_* metrics
(gauges refreshed every HALLSTATS_METRICS_REFRESH_SECONDS) with
HALLSTATS_METRICS_FAUST_SENSORS=false; "with" is the default (Faust's sensors
too). Each round runs them in the reverse order of the previous one, so drift
on a shared machine hits all of them.
Besides wall-clock throughput it reports the worker's CPU seconds per 100k
events over the same span (from /proc), which other load on the machine
disturbs much less.

    python -m bench.metrics_cost [--events 100000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from deploy import stack
from hallstats.cli.demo import start_worker, stop_worker
from hallstats.clickhouse import connect
from hallstats.kafka import client_config, ensure_topics
from hallstats.settings import Settings
from streams.progress import lags, wait_until_caught_up
from terminals import sample
from terminals.emit import emit_lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


MODES: dict[str, dict[str, object]] = {
    "without": {"metrics_port": 0},
    "hallstats only": {"metrics_faust_sensors": False},
    "with": {},
}


def run_once(
    base: Settings, lines: list[bytes], mode: str, workdir: Path
) -> tuple[float, float, int]:
    """Events/s and worker CPU s per 100k events over ``lines``; events archived."""
    settings = base.isolated(
        "mbench",
        workdir,
        worker_web_port=free_port(),
        metrics_port=free_port(),
        **MODES[mode],
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    emit_lines(lines, settings, validate=False)
    env = settings.as_env()
    uid = settings.app_id
    proc = start_worker(settings, workdir / f"worker-{uid}.log", env=env)
    try:
        deadline = time.monotonic() + 300
        while not any(lag.committed for lag in lags(settings, settings.topic)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {workdir}/worker-{uid}.log")
            time.sleep(0.05)
        started, cpu_started = time.monotonic(), cpu_seconds(proc.pid)
        wait_until_caught_up(settings, timeout=1800, poll=0.05)
        elapsed, cpu = time.monotonic() - started, cpu_seconds(proc.pid) - cpu_started
    finally:
        stop_worker(proc)
    client = connect(settings)
    try:
        db = settings.clickhouse_database
        ((archived,),) = client.execute(f"SELECT uniqExact(event_id) FROM {db}.events")
        client.execute(f"DROP DATABASE IF EXISTS {db}")
    finally:
        client.disconnect()
    admin = AdminClient(client_config(settings))
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(uid)]
    if mine:
        for future in admin.delete_topics(mine, request_timeout=30).values():
            future.result()
    return len(lines) / elapsed, cpu * 100_000 / len(lines), int(archived)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="lines of the sample year")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (ABBA order)")
    parser.add_argument("--workdir", default=".stack/bench-metrics")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base = Settings()
    stack.up(base, progress=lambda m: None)
    lines = [
        line.encode()
        for line in itertools.islice(sample.generate(sample.SampleSpec()), args.events)
    ]
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpus: dict[str, list[float]] = {mode: [] for mode in MODES}
    archived: set[int] = set()
    order = list(MODES)
    for round_ in range(args.rounds):
        for mode in order if round_ % 2 == 0 else order[::-1]:
            rate, cpu, n = run_once(base, lines, mode, workdir)
            rates[mode].append(rate)
            cpus[mode].append(cpu)
            archived.add(n)
            print(f"{mode:<15} {rate:>8,.0f} events/s {cpu:6.1f} CPU s/100k events", flush=True)
    print(f"events per run: {len(lines):,} (distinct archived {sorted(archived)})")
    base_rate, base_cpu = statistics.median(rates["without"]), statistics.median(cpus["without"])
    for mode in MODES:
        rate, cpu = statistics.median(rates[mode]), statistics.median(cpus[mode])
        print(
            f"median {mode:<15} {rate:>8,.0f} events/s ({rate / base_rate:.3f} of without), "
            f"{cpu:5.1f} CPU s/100k ({cpu / base_cpu:.3f})"
        )


if __name__ == "__main__":
    main()
