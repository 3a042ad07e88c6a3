"""Fixtures the fault tests share."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from hallstats.settings import Settings
from tests.support.services import Worker


@pytest.fixture
def supervised(worker: Worker) -> Iterator[Callable[[Settings], list[subprocess.Popen[bytes]]]]:
    """Like systemd's Restart=always: a worker that dies is started again."""
    stop = threading.Event()
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> list[subprocess.Popen[bytes]]:
        procs.append(worker(settings))

        def watch() -> None:
            while not stop.is_set():
                if procs[-1].poll() is not None:
                    procs.append(worker(settings))
                time.sleep(0.5)

        threading.Thread(target=watch, daemon=True).start()
        return procs

    yield start
    stop.set()
