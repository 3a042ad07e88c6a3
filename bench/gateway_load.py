"""Front-desk gateway under load: accepted events/s and request latency, vs direct Kafka.

Starts ``hallstats gateway`` as its own process on loopback (own topic and database),
issues a token per simulated terminal, and runs at least 200 terminals at once, each a
real offline-safe client (``terminals/sim.py``): every terminal first spools its
events (not timed), then all senders start together and drain to the gateway in
batches. The gateway's per-terminal rate limit is lifted for the run, so what is
measured is its capacity, not the limiter. The baseline is ``hallstats emit``
(``terminals/emit.py``: one idempotent producer straight to Kafka) sending as many
events in the same run; the ratio says what HTTP, authentication, per-request
validation and waiting for Kafka's acknowledgement cost on top.

Bounded in count and time (``--time-limit``). On the 2-core test machine the load
generator's 200+ client threads share the cores with the gateway, Kafka and
ClickHouse, so the figures are a floor for a gateway on its own host.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from deploy import stack
from gateway import TokenStore
from hallstats.clickhouse import connect, execute
from hallstats.errors import OperationalError
from hallstats.kafka import ensure_topics
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.ddl import ensure_schema
from terminals.emit import emit_lines
from terminals.sim import DEPARTMENTS, EVENT_TYPES, SimTerminal, occurred_in, run_terminals

WEEK = IsoWeek.parse("2024-W50")


def start_gateway(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **settings.as_env(),
        "HALLSTATS_GATEWAY_RATE_PER_SECOND": "1000000",
        "HALLSTATS_GATEWAY_BURST": "1000000",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hallstats.cli", "gateway", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationalError(f"hallstats gateway exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise OperationalError(f"hallstats gateway: expected /readyz within 60 s; see {log}")


def emit_rate(settings: Settings, count: int, seed: int) -> float:
    """Events/s of ``hallstats emit``'s code path for ``count`` events like the fleet's."""
    rng = random.Random(seed)
    zone = settings.zone
    lines = [
        json.dumps(
            {
                "schema_version": 1,
                "event_id": str(uuid.uuid4()),
                "event_type": rng.choice(EVENT_TYPES),
                "occurred_at": occurred_in(WEEK, zone, rng).isoformat(),
                "hall_id": "hall-bench",
                "window_id": f"W{rng.randrange(200):03d}",
                "department": rng.choice(DEPARTMENTS),
            },
            ensure_ascii=False,
        ).encode()
        + b"\n"
        for _ in range(count)
    ]
    ensure_topics(settings, [(settings.topic, settings.partitions)])  # not part of the rate
    started = time.perf_counter()
    report = emit_lines(lines, settings)
    elapsed = time.perf_counter() - started
    if report.sent != count:
        raise OperationalError(f"emit: expected {count} sent, got {report.sent}")
    return count / elapsed


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=200, help="concurrent terminals")
    parser.add_argument("--events", type=int, default=250, help="events per terminal")
    parser.add_argument("--batch", type=int, default=50, help="events per request")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds for the load")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    base = Settings()
    stack.up(base, progress=lambda m: None)
    stack.wait_for_kafka(base, 60)
    stack.wait_for_clickhouse(base, 60)
    work = Path(tempfile.mkdtemp(prefix="gateway-load-"))
    settings = base.isolated("bgl", work)
    direct = base.isolated("bge", work)
    ensure_schema(settings)
    store = TokenStore(settings)
    try:
        fleet = [
            SimTerminal("hall-bench", f"W{i:03d}", store.add("hall-bench", f"W{i:03d}"))
            for i in range(args.terminals)
        ]
    finally:
        store.close()
    proc = start_gateway(settings, args.port, work / "gateway.log")
    try:
        report = run_terminals(
            f"http://127.0.0.1:{args.port}",
            fleet,
            work / "spools",
            events=args.events,
            week=WEEK,
            zone=settings.zone,
            time_limit=args.time_limit,
            record_first=True,
            batch_size=args.batch,
            seed=1,
        )
    finally:
        proc.terminate()
        proc.wait(30)
    if report.failures or report.pending or not report.latencies:
        raise OperationalError(f"gateway load run incomplete: {report.summary()}")
    emitted = emit_rate(direct, report.created, seed=2)
    client = connect(settings)
    try:
        drop = f"DROP DATABASE IF EXISTS {settings.clickhouse_database}"
        execute(client, drop, settings=settings)
    finally:
        client.disconnect()
        shutil.rmtree(work, ignore_errors=True)

    accepted_rate = report.accepted / report.send_seconds
    result = {
        "terminals": args.terminals,
        "events": report.created,
        "batch": args.batch,
        "requests": report.requests,
        "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
        "accepted_per_s": round(accepted_rate, 1),
        "p50_ms": round(percentile(report.latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(report.latencies, 99) * 1000, 1),
        "emit_per_s": round(emitted, 1),
        "ratio": round(accepted_rate / emitted, 3),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"gateway load: {args.terminals} concurrent terminals x {args.events} events, "
        f"{args.batch} per request, loopback ({report.requests} requests: {result['statuses']})"
    )
    print(
        f"  accepted {result['accepted_per_s']:.0f} events/s; request latency "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )
    print(f"  hallstats emit (direct Kafka), same events, same run: {emitted:.0f} events/s")
    print(f"  gateway / emit = {result['ratio']:.3f}")


if __name__ == "__main__":
    main()
