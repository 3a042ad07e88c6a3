"""Simulated window terminals: N threads, each a real :class:`TerminalClient`.

What ``hallstats terminal-sim``, the gateway fault tests, the demo and the load
benchmark run: every terminal records its events through the client (so through
its spool) and its background sender delivers them over real HTTP, exactly as an
embedded front-desk system would. Bounded in count and time: at the deadline
recording stops, senders get what is left of it to drain, then stop; whatever is
still pending stays in the spools (a next run with the same spool folder sends it
first), and the report says so.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from schemas.calendar import IsoWeek
from terminals.client import TerminalClient

EVENT_TYPES = ("consult", "accept", "issue", "transfer")
TYPE_WEIGHTS = (40, 30, 20, 10)
DEPARTMENTS = ("民政厅", "商务厅", "药监局", "人社厅", "公安厅", "自然资源厅")


@dataclass(frozen=True)
class SimTerminal:
    """A terminal's identity and the token the gateway issued to it."""

    hall_id: str
    window_id: str
    token: str


@dataclass
class SimReport:
    terminals: int = 0
    created: int = 0
    accepted: int = 0  # this run's acceptances (events left over from a run before included)
    rejected: int = 0
    pending: int = 0  # still in the spools when the run stopped
    by_type: Counter[str] = field(default_factory=Counter)  # created, per event type
    requests: int = 0
    network_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds per answered request
    send_seconds: float = 0.0  # first request to last answer
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)  # terminals refused for good (401/403)

    def summary(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"terminals {self.terminals}: created {self.created}, accepted {self.accepted}, "
            f"rejected {self.rejected}, pending {self.pending}; requests {self.requests} "
            f"({statuses or 'none'}), network errors {self.network_errors}, "
            f"{self.elapsed:.1f} s"
        )


def spool_file(spool_dir: Path, terminal: SimTerminal) -> Path:
    """One spool per terminal, named after it (so a rerun finds its leftovers)."""

    def safe(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    return spool_dir / f"{safe(terminal.hall_id)}--{safe(terminal.window_id)}.sqlite"


def occurred_in(week: IsoWeek, zone: ZoneInfo, rng: random.Random) -> datetime:
    """A moment in the week's working hours (Monday to Friday, 9:00 to 17:00 local)."""
    day = rng.choice(week.days()[:5])
    start = datetime(day.year, day.month, day.day, 9, tzinfo=zone)
    return start + timedelta(seconds=rng.randrange(8 * 3600))


def run_terminals(
    gateway_url: str,
    terminals: list[SimTerminal],
    spool_dir: Path,
    *,
    events: int,
    rate: float = 0.0,
    week: IsoWeek | None = None,
    zone: ZoneInfo | None = None,
    time_limit: float = 120.0,
    record_first: bool = False,
    batch_size: int = 1000,
    linger: float = 0.05,
    timeout: float = 30.0,
    seed: int = 0,
) -> SimReport:
    """Run every terminal in its own thread; each records ``events`` (at ``rate`` per
    second, 0: as fast as the spool takes them) of mixed types and departments, dated
    now or, with ``week``, inside that week. ``record_first``: all terminals spool
    everything before any sends (a load test of the gateway alone)."""
    zone = zone or ZoneInfo("Asia/Shanghai")
    report = SimReport(terminals=len(terminals))
    lock = threading.Lock()
    sending = threading.Event()
    first_request: list[float] = []
    last_answer: list[float] = []
    recorded = threading.Barrier(len(terminals) + 1) if record_first else None
    started = time.monotonic()
    deadline = started + time_limit

    def on_request(status: int, _events: int, seconds: float) -> None:
        now = time.monotonic()
        with lock:
            if not first_request:
                first_request.append(now - seconds)
            if status:
                report.latencies.append(seconds)
                last_answer[:] = [now]

    def barrier_wait() -> float:
        return max(0.0, deadline - time.monotonic()) + 60

    def terminal(index: int, spec: SimTerminal) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        arrived = False

        def arrive() -> None:
            """Reach the barrier once; the others never wait for a terminal that failed."""
            nonlocal arrived
            if recorded is None or arrived:
                return
            arrived = True
            with contextlib.suppress(threading.BrokenBarrierError):
                recorded.wait(barrier_wait())
            sending.wait(barrier_wait())

        try:
            client = TerminalClient(
                gateway_url,
                spec.token,
                spool_file(spool_dir, spec),
                spec.hall_id,
                spec.window_id,
                batch_size=batch_size,
                timeout=timeout,
                linger=linger,
                on_request=on_request,
            )
        except BaseException:
            arrive()
            raise
        before = client.counts()
        types: Counter[str] = Counter()
        try:
            if not record_first:
                client.start()
            began = time.monotonic()
            for n in range(events):
                if time.monotonic() >= deadline:
                    break
                event_type = rng.choices(EVENT_TYPES, TYPE_WEIGHTS)[0]
                client.record(
                    event_type,
                    department=rng.choice(DEPARTMENTS),
                    item_code=f"SIM-{rng.randrange(1, 40):03d}",
                    occurred_at=occurred_in(week, zone, rng) if week is not None else None,
                )
                types[event_type] += 1
                if rate > 0:
                    ahead = began + (n + 1) / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            if recorded is not None:
                arrive()
                client.start()
            counts = client.close(drain_timeout=max(0.0, deadline - time.monotonic()))
        with lock:
            report.created += sum(types.values())
            report.by_type.update(types)
            report.accepted += counts.accepted - before.accepted
            report.rejected += counts.rejected - before.rejected
            report.pending += counts.pending
            totals = client.totals
            report.requests += totals.requests
            report.network_errors += totals.network_errors
            report.statuses.update(totals.statuses)
            if client.failure is not None:
                report.failures.append(
                    f"{spec.hall_id}/{spec.window_id}: {client.failure.stop}: "
                    f"{client.failure.detail}"
                )

    def guarded(index: int, spec: SimTerminal) -> None:
        try:
            terminal(index, spec)
        except Exception as exc:  # reported, never silently a smaller count
            with lock:
                report.failures.append(f"{spec.hall_id}/{spec.window_id}: {exc!r}")

    threads = [
        threading.Thread(target=guarded, args=(i, t), name=f"sim-{i}", daemon=True)
        for i, t in enumerate(terminals)
    ]
    for thread in threads:
        thread.start()
    if recorded is not None:
        with contextlib.suppress(threading.BrokenBarrierError):
            recorded.wait(barrier_wait())
        sending.set()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 60)
    report.elapsed = time.monotonic() - started
    if first_request and last_answer:
        report.send_seconds = last_answer[0] - first_request[0]
    return report
