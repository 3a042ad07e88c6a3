"""Read-API latency (p50/p95) on a year of data vs the API's own /health.

Seeds a fresh ClickHouse database with the 2024 counters (every week
finalized, with breakdowns; 2023-W01..W52 snapshots for 同比) and this ISO
year's live counters up to the current week, starts ``hallstats api`` as its
own process on loopback with a bearer token, and times sequential requests
with httpx. The baseline is /health in the same server and run (no database,
no auth): the ratios say what each endpoint's ClickHouse reads cost on top of
the HTTP stack itself.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from deploy import stack
from hallstats.clickhouse import connect, execute
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import ensure_schema
from schemas.figures import TypeCounts
from tests.support import seed

BASELINE = "/health"


@dataclass(frozen=True)
class Latency:
    path: str
    p50_ms: float
    p95_ms: float

    def ratios(self, base: Latency) -> tuple[float, float]:
        return self.p50_ms / base.p50_ms, self.p95_ms / base.p95_ms


def _percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def seed_database(settings: Settings, today: IsoWeek) -> None:
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        seed.seed_year(client, settings)  # 2024-W01..W52, each finalized with breakdowns
        for week in seed.weeks(IsoWeek(2023, 1), IsoWeek(2023, 52)):
            base = seed.BULLETIN_WEEKLY
            seed.store_snapshot(
                client,
                settings,
                week,
                base,
                TypeCounts.from_mapping({k: v * week.week for k, v in base.as_dict().items()}),
            )
        if today.year != seed.BULLETIN_WEEK.year:  # live counters of the current year
            weekly = seed.BULLETIN_WEEKLY
            ytd = TypeCounts.from_mapping({k: v * today.week for k, v in weekly.as_dict().items()})
            spec = seed.SeedSpec(
                first=IsoWeek(today.year, 1), last=today, pin=today, weekly=weekly, year_to_date=ytd
            )
            seed.seed_counters(client, settings, spec)
    finally:
        client.disconnect()


def start_api(settings: Settings, token: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HALLSTATS_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "HALLSTATS_API_PORT": str(settings.api_port),
        "HALLSTATS_API_TOKEN": token,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "hallstats.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationalError(f"hallstats api exited with {proc.returncode} before serving")
        try:
            if client.get(BASELINE).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise OperationalError(f"hallstats api: expected /health within {timeout}s, got no answer")


def measure(client: httpx.Client, paths: list[str], rounds: int, warmup: int) -> list[Latency]:
    """Round-robin over the paths so drift on the machine hits every path alike."""
    samples: dict[str, list[float]] = {p: [] for p in paths}
    for index in range(warmup + rounds):
        for path in paths:
            started = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise OperationalError(f"GET {path}: expected 200, got {response.status_code}")
            if index >= warmup:
                samples[path].append(elapsed * 1000)
    return [Latency(p, _percentile(s, 50), _percentile(s, 95)) for p, s in samples.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    args = parser.parse_args()

    base = Settings()
    stack.up(base, progress=lambda m: None)
    stack.wait_for_clickhouse(base, 60)
    settings = base.model_copy(
        update={"clickhouse_database": f"bench_api_{uuid.uuid4().hex[:8]}", "api_port": args.port}
    )
    today = IsoWeek.of(datetime.now(UTC).astimezone(settings.zone).date())
    started = time.monotonic()
    seed_database(settings, today)
    seeded_in = time.monotonic() - started
    token = secrets.token_urlsafe(24)
    paths = [
        BASELINE,
        "/weeks/2024-W50",
        "/weeks/2024-W50?version=1",
        "/weeks/2024-W50/revisions",
        "/weeks/2024-W50/departments",
        "/weeks/2024-W50/halls?hall=hall-provincial",
        "/years/2024/weeks",
        "/live/current",
    ]
    proc = start_api(settings, token)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{args.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as client:
            wait_ready(client, proc)
            results = measure(client, paths, args.rounds, args.warmup)
    finally:
        proc.terminate()
        proc.wait(15)
        if not args.keep:
            client_ = connect(settings)
            execute(
                client_,
                f"DROP DATABASE IF EXISTS {settings.clickhouse_database}",
                settings=settings,
            )
            client_.disconnect()
    baseline = results[0]
    if args.json:
        print(json.dumps([{**r.__dict__, "ratio_p95": r.ratios(baseline)[1]} for r in results]))
        return
    print(f"seeded 2024 (52 finalized weeks) + {today.year} live up to {today} in {seeded_in:.1f}s")
    print(f"{args.rounds} sequential requests per endpoint, bearer auth, uvicorn on loopback")
    print(f"{'endpoint':<44} {'p50 ms':>8} {'p95 ms':>8} {'p50 x':>7} {'p95 x':>7}")
    for r in results:
        r50, r95 = r.ratios(baseline)
        print(f"{r.path:<44} {r.p50_ms:8.2f} {r.p95_ms:8.2f} {r50:7.1f} {r95:7.1f}")
    worst = max(results[1:], key=lambda r: r.p95_ms)
    print(
        f"p95 of the slowest endpoint ({worst.path}): {worst.p95_ms:.1f} ms = "
        f"{worst.ratios(baseline)[1]:.1f}x the /health baseline"
    )


if __name__ == "__main__":
    main()
