"""Does the worker's cost grow with history? Restart time, peak RSS, recovery time.

Counts one synthetic year (``--events-per-year``, 6 halls x 24 departments),
then four more, and after each: restarts the worker three times and times process
start -> a newly emitted event counted in ClickHouse (the median is reported),
with the peak RSS of the worker's processes over that restart; then deletes the
worker's data folder (a new host) and times the same with the state rebuilt from
ClickHouse. Prints the five-year
figures as ratios of the one-year ones (the baseline of the same run).
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deploy import stack
from hallstats.cli.demo import start_worker, stop_worker
from hallstats.clickhouse import connect
from hallstats.kafka import ensure_topics
from hallstats.settings import Settings
from streams.progress import wait_until_caught_up
from terminals.emit import emit_lines

HALLS = [f"hall-{n}" for n in range(6)]
DEPARTMENTS = [f"department-{n:02d}" for n in range(24)]
TYPES = ["consult", "accept", "issue", "transfer"]


def year_of_events(year: int, count: int, rng: random.Random) -> Iterator[bytes]:
    start = datetime(year, 1, 1, tzinfo=UTC)
    seconds = int((datetime(year + 1, 1, 1, tzinfo=UTC) - start).total_seconds())
    for _ in range(count):
        when = (start + timedelta(seconds=rng.randrange(seconds))).isoformat()
        yield (
            f'{{"schema_version":1,"event_id":"{uuid.UUID(int=rng.getrandbits(128), version=4)}",'
            f'"event_type":"{rng.choice(TYPES)}","occurred_at":"{when}",'
            f'"hall_id":"{rng.choice(HALLS)}","window_id":"W{rng.randrange(1, 13):02d}",'
            f'"department":"{rng.choice(DEPARTMENTS)}"}}'
        ).encode()


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process and its descendants (each one's own peak), in MiB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        proc = Path(f"/proc/{current}")
        try:
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            for task in (proc / "task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total / 1024


def counted(settings: Settings, event_id: str) -> bool:
    client = connect(settings)
    try:
        rows = client.execute(
            f"SELECT count() FROM {settings.clickhouse_database}.events WHERE event_id = %(id)s",
            {"id": event_id},
        )
    except Exception:  # the database may not exist yet on a fresh start
        return False
    finally:
        client.disconnect()
    return bool(rows[0][0])


@dataclass(frozen=True)
class Restart:
    seconds: float
    peak_rss_mib: float


def restart(settings: Settings, log: Path, rng: random.Random) -> Restart:
    """Worker start -> one new event counted; the worker is stopped afterwards."""
    line = next(year_of_events(2025, 1, rng))
    event_id = line.split(b'"event_id":"')[1][:36].decode()
    started = time.monotonic()
    proc = start_worker(settings, log, env=settings.as_env())
    try:
        emit_lines([line], settings, validate=False)
        while not counted(settings, event_id):
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}; see {log}")
            if time.monotonic() - started > 300:
                raise SystemExit("a new event was not counted within 300 s")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        return Restart(elapsed, peak_rss_mib(proc.pid))
    finally:
        stop_worker(proc)


def count_years(settings: Settings, log: Path, years: range, per_year: int) -> float:
    proc = start_worker(settings, log, env=settings.as_env())
    started = time.monotonic()
    try:
        for year in years:
            emit_lines(
                year_of_events(year, per_year, random.Random(year)), settings, validate=False
            )
        wait_until_caught_up(settings, 3600)
        return time.monotonic() - started
    finally:
        stop_worker(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default=".stack/bench")
    parser.add_argument("--events-per-year", type=int, default=600_000)
    args = parser.parse_args()
    base = Settings()
    stack.up(base, progress=lambda m: None)
    settings = base.isolated(
        "growth", Path(args.workdir), worker_web_port=6098, metrics_port=9463, auto_finalize=False
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    log = Path(args.workdir) / f"worker-{settings.app_id}.log"
    rng = random.Random(1)
    rows = []
    for label, years in (("1 year", range(2019, 2020)), ("5 years", range(2020, 2024))):
        seconds = count_years(settings, log, years, args.events_per_year)
        print(f"counted {len(years)} more year(s) of {args.events_per_year:,} in {seconds:.0f} s")
        tries = sorted((restart(settings, log, rng) for _ in range(3)), key=lambda r: r.seconds)
        warm = tries[1]  # the median of three restarts
        print(f"{label}: restarts {', '.join(f'{r.seconds:.1f} s' for r in tries)}")
        shutil.rmtree(settings.worker_data_dir, ignore_errors=True)  # a new host
        cold = restart(settings, log, rng)
        rows.append((label, warm, cold))
    print(
        f"{'history':<9} {'restart s':>10} {'peak RSS MiB':>13} {'recovery s':>11} {'its RSS':>8}"
    )
    for label, warm, cold in rows:
        print(
            f"{label:<9} {warm.seconds:10.1f} {warm.peak_rss_mib:13.0f} "
            f"{cold.seconds:11.1f} {cold.peak_rss_mib:8.0f}"
        )
    (_, one_warm, one_cold), (_, five_warm, five_cold) = rows
    print(f"ratio 5y/1y restart:      {five_warm.seconds / one_warm.seconds:.2f}")
    print(f"ratio 5y/1y peak RSS:     {five_warm.peak_rss_mib / one_warm.peak_rss_mib:.2f}")
    print(f"ratio 5y/1y recovery:     {five_cold.seconds / one_cold.seconds:.2f}")


if __name__ == "__main__":
    main()
