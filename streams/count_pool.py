"""Counting in several processes behind one Faust member.

One Python process counts some 20-30k events a second on this project's test
machine, and counting is what finalize waits for.
``HALLSTATS_WORKER_COUNT_PROCESSES`` processes therefore each count their share
of the partitions this worker owns (partition ``p`` goes to process ``p % n``),
each with its own :class:`streams.counting.Counting` and its own state slot
(:mod:`streams.state`), exactly as ``n`` workers would.

The parent stays the one Faust member: no second group member, so no extra
rebalance at start, one leader timer, one ``/metrics``. Its agent splits each
batch by partition, hands the parts to the processes at once and acknowledges
the batch only when every process answered that its part is durable. Each
answer carries the part's :class:`~streams.counting.CountResult` and a
:class:`~streams.count_summary.CountSummary` for the parent's metrics.

A counting process that dies ends the worker (its batch fails and the agent exits,
or the worker's watch, :meth:`CountPool.check`, sees it first; see :mod:`streams.app`):
a restart resumes from what is durable, as after any crash.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from hallstats.errors import HallstatsError, OperationalError
from hallstats.settings import Settings
from streams.count_summary import CountSummary, SummaryRecorder
from streams.counting import Counting, CountResult
from streams.gaps import Fetched
from streams.lateness import FinalizedWeeks
from streams.stage_stats import StageTallies

log = logging.getLogger(__name__)

_NOTHING = CountResult(0, 0, 0, 0, 0)


class SummarySink(Protocol):
    """Where the processes' summaries go (:class:`streams.metrics.WorkerMetrics`)."""

    def record(self, summary: CountSummary) -> None: ...


def _serve(
    settings: Settings, index: int, processes: int, tallies: StageTallies, conn: Connection
) -> None:
    """A counting process: requests in order, an answer to each but assign/revoke."""
    from streams.worker import stage_child_setup

    stage_child_setup(f"hs-count-{index}")
    logging.getLogger("clickhouse_driver").setLevel(logging.WARNING)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent says when to stop (a
        signal.signal(sig, signal.SIG_IGN)  # "close" after its batch); dies with it
    # A failed ClickHouse write is sent at once (an "interim" answer the parent reads
    # while it waits), so an outage shows on /metrics while the sink still retries.
    recorder = SummaryRecorder(urgent=lambda summary: conn.send(("interim", summary)))
    finalized = FinalizedWeeks(settings)
    counting = Counting(
        settings,
        observer=recorder if settings.metrics_port else None,
        tallies=tallies,
        finalized=finalized,
        slot=(index, processes),
    )
    while True:
        try:
            kind, *args = conn.recv()
        except EOFError:  # the parent is gone
            counting.close()
            return
        if kind == "assign":
            counting.assign(args[0])
            continue
        if kind == "revoke":
            counting.revoke(args[0])
            continue
        try:
            if kind == "close":
                counting.close()
                conn.send(("ok", None, recorder.drain()))
                return
            finalized.versions = args[-1]
            found = counting.process(args[0]) if kind == "process" else counting.catch_up()
            conn.send(("ok", found, recorder.drain()))
        except HallstatsError as exc:
            conn.send(("error", isinstance(exc, OperationalError), str(exc)))
        except Exception:
            conn.send(("error", False, traceback.format_exc()))


class _Process:
    """The parent's end of one counting process."""

    def __init__(self, settings: Settings, index: int, processes: int, tallies: StageTallies):
        context = multiprocessing.get_context("spawn")
        self.index = index
        self._conn, child = context.Pipe()
        self._proc: BaseProcess = context.Process(
            target=_serve,
            args=(settings, index, processes, tallies, child),
            name=f"hallstats-count-{index}",
            daemon=True,
        )
        self._proc.start()
        child.close()
        if self._proc.pid is None:  # pragma: no cover - start() sets it or raises
            raise OperationalError(f"counting process {index} did not start")
        self.pid: int = self._proc.pid
        self.call_lock = threading.Lock()  # one request at a time waits for its answer
        self._send_lock = threading.Lock()

    def tell(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def exited(self) -> str | None:
        """Why the process is gone, or None while it runs."""
        if self._proc.is_alive():
            return None
        return f"counting process {self.index} (pid {self.pid}) exited with {self._proc.exitcode}"

    def call(
        self, message: tuple[Any, ...], record: Callable[[CountSummary], None]
    ) -> CountResult | None:
        """Under ``call_lock``: send, wait for the answer, raise what the process raised.
        Every summary it sends, interim ones meanwhile and the answer's, goes to ``record``."""
        try:
            self.tell(message)
            answer = self._conn.recv()
            while answer[0] == "interim":
                record(answer[1])
                answer = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._proc.join(5)
            raise OperationalError(
                f"{self.exited() or f'counting process {self.index} is unreachable'} "
                f"({type(exc).__name__})"
            ) from exc
        if answer[0] == "error":
            _kind, operational, text = answer
            where = f"counting process {self.index}: {text}"
            raise OperationalError(where) if operational else RuntimeError(where)
        _ok, result, summary = answer
        record(summary)
        found: CountResult | None = result
        return found

    def stop(self, timeout: float = 30.0) -> None:
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


class CountPool:
    """Stands where one :class:`~streams.counting.Counting` would, over ``n`` processes."""

    def __init__(
        self,
        settings: Settings,
        tallies: list[StageTallies],
        *,
        metrics: SummarySink,
        finalized: FinalizedWeeks,
    ) -> None:
        """``tallies``: one shared-memory :class:`StageTallies` per process."""
        self._settings = settings
        self.tallies = tallies
        self._metrics = metrics
        self._finalized = finalized
        self._procs: list[_Process] = []
        self._threads = ThreadPoolExecutor(len(tallies), thread_name_prefix="count-pool")

    def start(self) -> None:
        n = len(self.tallies)
        self._procs = [_Process(self._settings, i, n, t) for i, t in enumerate(self.tallies)]
        log.info("count: %s counting processes (partition p -> process p %% %s)", n, n)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def check(self) -> None:
        """Raise if a counting process has died: its partitions would stall unseen when
        no batch of theirs arrives to fail (the worker then exits, as on a failed batch)."""
        for proc in list(self._procs):
            reason = proc.exited()
            if reason is not None and self._procs:  # not being closed meanwhile
                raise OperationalError(f"{reason}; its partitions cannot be counted")

    def _by_process(self, partitions: Iterable[int]) -> dict[int, list[int]]:
        """Partition -> its process; nothing once closed (Faust revokes on shutdown)."""
        split: dict[int, list[int]] = defaultdict(list)
        if not self._procs:
            return split
        for partition in partitions:
            split[self._index(partition)].append(partition)
        return split

    def _index(self, partition: int) -> int:
        """The process that counts ``partition`` (and owns its state slot)."""
        return partition % len(self._procs)

    def assign(self, partitions: Iterable[int]) -> None:
        self._tell("assign", partitions)

    def revoke(self, partitions: Iterable[int]) -> None:
        self._tell("revoke", partitions)

    def _tell(self, kind: str, partitions: Iterable[int]) -> None:
        """From Faust's rebalance callbacks: never raises there. A process that cannot be
        told is dead or closing, and :meth:`check` or the next batch says so."""
        procs = self._procs
        for index, mine in self._by_process(partitions).items():
            try:
                procs[index].tell((kind, mine))
            except OSError as exc:
                log.warning("count: cannot %s %s to process %s: %s", kind, mine, index, exc)

    def process(self, delivered: list[Fetched]) -> CountResult:
        """Every process's part durable on return (the same promise as Counting.process)."""
        if not self._procs:
            raise OperationalError("count: the counting processes are stopped")
        parts: dict[int, list[Fetched]] = defaultdict(list)
        for fetched in delivered:
            parts[self._index(fetched.partition)].append(fetched)
        versions = dict(self._finalized.versions)

        def call(index: int) -> CountResult | None:
            proc = self._procs[index]
            with proc.call_lock:
                return proc.call(("process", parts[index], versions), self._record)

        results = list(self._threads.map(call, list(parts)))
        return _sum(r for r in results if r is not None)

    def catch_up(self) -> CountResult | None:
        """Each idle process reads what delivery has not brought (Counting.catch_up)."""
        versions = dict(self._finalized.versions)

        def call(proc: _Process) -> CountResult | None:
            if not proc.call_lock.acquire(blocking=False):
                return None  # counting a batch: not idle
            try:
                return proc.call(("catch_up", versions), self._record)
            finally:
                proc.call_lock.release()

        results = [r for r in self._threads.map(call, self._procs) if r is not None]
        return _sum(results) if results else None

    def _record(self, summary: CountSummary) -> None:
        """Metrics never fail a batch that is already durable (as WorkerMetrics.counted)."""
        try:
            self._metrics.record(summary)
        except Exception:
            log.exception("metrics: recording a counting process's summary failed")

    def close(self) -> None:
        procs, self._procs = self._procs, []  # closing: check() and rebalances stand down
        for proc in procs:
            with proc.call_lock:
                try:
                    proc.call(("close",), self._record)
                except (OperationalError, RuntimeError) as exc:
                    log.warning("count: closing process %s: %s", proc.index, exc)
            proc.stop()
        self._threads.shutdown(wait=False)


def _sum(results: Iterable[CountResult]) -> CountResult:
    total = _NOTHING
    for r in results:
        total = CountResult(
            total.bundles + r.bundles,
            total.events + r.events,
            total.newly_counted + r.newly_counted,
            total.duplicates + r.duplicates,
            total.conflicts + r.conflicts,
        )
    return total
