"""Like systemd's ``Restart=always`` for test workers: one that dies is started again."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hallstats.settings import Settings
from tests.support.services import Worker


@contextmanager
def supervised(worker: Worker, settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start a worker and keep one running until the block ends; a dead one is marked
    ``expected_exit`` (an outage may kill it, by design: it resumes from durable state)."""
    stop = threading.Event()
    procs = [worker(settings)]

    def watch() -> None:
        while not stop.wait(0.5):
            if procs[-1].poll() is not None:
                procs[-1].expected_exit = True  # type: ignore[attr-defined]
                procs.append(worker(settings))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield procs
    finally:
        stop.set()
        watcher.join(5)
