"""The offline-safe terminal client a front-desk system embeds.

``record`` gives each act its event_id (uuid4) and an aware timestamp, checks it
with the same contract code as the gateway and the worker (so a bug in the
front-desk system shows at once, at the counter, not weeks later in a DLQ), and
commits it to the local spool before returning the event_id. Sending is separate:
``start()`` runs a background sender that drains the spool whenever something is
recorded, and ``flush()`` drains in the caller's thread. The network, the gateway
or Kafka being down only delays delivery: the spool keeps everything until the
gateway answered for it.

    client = TerminalClient("http://127.0.0.1:8090", token, "spool.sqlite", "hall-a", "W07")
    client.start()
    event_id = client.record("accept", department="民政厅", item_code="MZ-001")
    ...
    client.close(drain_timeout=10)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.events import SCHEMA_VERSION, validate_object
from terminals.sender import (
    DRAINED,
    ERROR,
    FATAL,
    Backoff,
    DrainReport,
    RequestHook,
    Sender,
)
from terminals.spool import Rejection, Spool, SpoolCounts

IDLE_POLL_SECONDS = 5.0  # the background sender also looks now and then (another process)

log = logging.getLogger(__name__)


class TerminalClient:
    """One window terminal: records events durably and delivers them to the gateway."""

    def __init__(
        self,
        gateway_url: str,
        token: str,
        spool_path: Path | str,
        hall_id: str,
        window_id: str,
        *,
        batch_size: int = 1000,
        timeout: float = 30.0,
        linger: float = 0.0,
        backoff: Backoff | None = None,
        on_request: RequestHook | None = None,
    ) -> None:
        self.hall_id = hall_id
        self.window_id = window_id
        self.spool = Spool(spool_path)
        try:
            self.sender = Sender(
                self.spool,
                gateway_url,
                token,
                batch_size=batch_size,
                timeout=timeout,
                backoff=backoff,
                on_request=on_request,
            )
        except BaseException:
            self.spool.close()
            raise
        self.linger = linger  # seconds the background sender waits to fill a batch
        self.totals = DrainReport()  # what the background sender did so far
        # The last failure of the background sender: the gateway refused for good (it
        # stopped), or an unexpected error (stop ``ERROR``, redacted; it retries).
        self.failure: DrainReport | None = None
        self.errors = 0  # unexpected errors of the background sender so far
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._rng = random.Random()

    def record(
        self,
        event_type: str,
        department: str,
        item_code: str | None = None,
        case_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Spool one act and return its event_id; raises ``EventRejected`` (nothing is
        spooled) when it breaks the contract, e.g. a naive ``occurred_at``."""
        now = datetime.now(UTC)
        moment = occurred_at if occurred_at is not None else now.astimezone()
        event: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "occurred_at": moment.isoformat(),
            "hall_id": self.hall_id,
            "window_id": self.window_id,
            "department": department,
        }
        if item_code is not None:
            event["item_code"] = item_code
        if case_id is not None:
            event["case_id"] = case_id
        validate_object(event, now=now)
        self.spool.add(event["event_id"], json.dumps(event, ensure_ascii=False))
        self._wake.set()
        return str(event["event_id"])

    def flush(self, timeout: float | None = None) -> DrainReport:
        """Drain now, in this thread (not while the background sender runs)."""
        if self.running():
            raise RuntimeError("flush: the background sender is running; use close()")
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.sender.drain(deadline=deadline)

    def start(self) -> None:
        """Run the sender in a background thread until ``close`` (again after it
        stopped on a refusal for good, once the operator fixed the cause)."""
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"sender-{self.hall_id}-{self.window_id}", daemon=True
            )
            self._thread.start()

    def running(self) -> bool:
        """Whether the background sender is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def close(self, drain_timeout: float = 0.0) -> SpoolCounts:
        """Give the background sender up to ``drain_timeout`` s to empty the spool, stop it
        and close the spool. Whatever is still pending stays on disk for next time."""
        thread = self._thread
        if thread is not None:
            deadline = time.monotonic() + drain_timeout
            while thread.is_alive() and time.monotonic() < deadline and self.spool.counts().pending:
                self._wake.set()
                time.sleep(0.05)
            self._stop.set()
            self._wake.set()
            thread.join()
            self._thread = None
        counts = self.spool.counts()
        self.sender.close()
        self.spool.close()
        return counts

    def counts(self) -> SpoolCounts:
        return self.spool.counts()

    def rejections(self) -> list[Rejection]:
        return self.spool.rejections()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with self._thread_lock:
                if self._thread is threading.current_thread():
                    self._thread = None  # ended: start() may run a new one

    def _loop(self) -> None:
        errors = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                report = self.sender.drain(stop=self._stop)
            except Exception as exc:
                # The spool (a locked or full disk), a hook, a bug: what was not answered
                # is still pending. Record it (never the token) and try again later.
                errors += 1
                self.errors += 1
                detail = self.sender.redact(f"{type(exc).__name__}: {exc}")[:500]
                self.failure = DrainReport(stop=ERROR, detail=detail)
                log.warning("terminal %s/%s sender: %s", self.hall_id, self.window_id, detail)
                self.sender.close()
                self._stop.wait(self.sender.backoff.delay(errors, self._rng))
                continue
            errors = 0
            self._add(report)
            if report.stop in FATAL:
                self.failure = report  # the operator must act; retrying will not help
                return
            if report.stop == DRAINED:
                self._wake.wait(IDLE_POLL_SECONDS)
                if self.linger > 0 and not self._stop.is_set():
                    self._stop.wait(self.linger)

    def _add(self, report: DrainReport) -> None:
        t = self.totals
        t.accepted += report.accepted
        t.rejected += report.rejected
        t.requests += report.requests
        t.retries += report.retries
        t.network_errors += report.network_errors
        t.stop, t.detail, t.pending = report.stop, report.detail, report.pending
        for status, n in report.statuses.items():
            t.statuses[status] = t.statuses.get(status, 0) + n
