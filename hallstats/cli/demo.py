"""``hallstats demo`` / ``make demo``: the whole path once, on the local stack.

Stack up, generate the calibrated sample year, start a worker, replay the
year through Kafka, finalize 2024-W50 and print the bulletin paragraph; then the
front-desk path once: the gateway, with simulated terminals reporting through it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hallstats.errors import OperationalError
from hallstats.settings import Settings

DEMO_WEEK = "2024-W50"


def start_worker(
    settings: Settings, log_path: Path, env: dict[str, str] | None = None, stage: str = "all"
) -> subprocess.Popen[bytes]:
    """The worker as a child process, as operations would run it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hallstats.cli", "worker", "--stage", stage],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_demo(settings: Settings, *, console: Console, keep_worker: bool = False) -> None:
    from consumers import bulletin, finalized
    from consumers.finalize import finalize
    from deploy import stack
    from hallstats.clickhouse import connect
    from schemas.calendar import IsoWeek
    from streams.progress import Lag
    from terminals import sample
    from terminals.emit import emit_file

    stack.up(settings, progress=lambda m: console.print(f"[cyan]stack[/]: {m}"))
    data = settings.stack_dir.resolve() / "sample-2024.jsonl"
    if not data.exists():
        console.print(f"generating the calibrated sample year into {data} ...")
        tmp = data.with_suffix(".tmp")
        lines = sample.write_jsonl(tmp, sample.SampleSpec())
        tmp.rename(data)
        console.print(f"  {lines} lines")
    proc = start_worker(settings, settings.stack_dir.resolve() / "worker.log")
    console.print(f"worker started (pid {proc.pid}, log {settings.stack_dir / 'worker.log'})")
    try:
        started = time.monotonic()
        size = data.stat().st_size
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("emit  (bytes)", total=size)
            report = emit_file(data, settings, on_bytes=lambda n: progress.advance(task, n))
            count_task = progress.add_task("worker: catching up", total=None)

            def show(lags: list[Lag]) -> None:
                if proc.poll() is not None:
                    raise OperationalError(
                        f"worker exited with code {proc.returncode}; see its log"
                    )
                behind = sum(lag.behind for lag in lags)
                stage = "validate" if lags and lags[0].topic == settings.topic else "count"
                progress.update(
                    count_task, description=f"worker: {stage}, {behind} messages behind"
                )

            result = finalize(settings, IsoWeek.parse(DEMO_WEEK), timeout=1800, on_progress=show)
        elapsed = time.monotonic() - started
        console.print(
            f"sent {report.sent} (client-side rejected {report.rejected}); "
            f"finalized {DEMO_WEEK} v{result.snapshot.version} in {elapsed:.1f} s"
        )
        client = connect(settings)
        try:
            snap = finalized.read(client, settings, IsoWeek.parse(DEMO_WEEK))
        finally:
            client.disconnect()
        print(bulletin.paragraph(snap.weekly, snap.year_to_date))
        front_desk(settings, console)
    finally:
        if not keep_worker:
            stop_worker(proc)


def front_desk(settings: Settings, console: Console, terminals: int = 4, events: int = 25) -> None:
    """The front-desk path once: ``hallstats gateway`` and simulated window terminals
    (real offline-safe clients) reporting this week's events through it."""
    from gateway import TokenStore
    from terminals.sim import SimTerminal, run_terminals

    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    log_path = settings.stack_dir.resolve() / "gateway.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hallstats.cli", "gateway"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    store = TokenStore(settings)
    issued: list[SimTerminal] = []
    try:
        _wait_until_healthy(url, proc, log_path)
        issued = [
            SimTerminal("hall-demo", window, store.add("hall-demo", window))
            for window in (f"W{i:02d}" for i in range(1, terminals + 1))
        ]
        report = run_terminals(
            url,
            issued,
            settings.stack_dir.resolve() / "demo-terminals",
            events=events,
            zone=settings.zone,
            time_limit=60.0,
            batch_size=50,
        )
        console.print(f"front desk (gateway {url}): {report.summary()}")
    finally:
        for terminal in issued:
            store.revoke(terminal.hall_id, terminal.window_id)
        store.close()
        stop_worker(proc)


def _wait_until_healthy(
    url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationalError(f"gateway exited with code {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise OperationalError(f"gateway at {url} did not answer /healthz within {timeout:.0f} s")
