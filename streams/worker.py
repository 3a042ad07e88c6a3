"""Run the Faust app as a long-lived worker process (``hallstats worker``)."""

from __future__ import annotations

import logging

from faust import Worker

from hallstats.settings import Settings
from streams.app import build_app


def run(settings: Settings, *, loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT); Faust commits on the way out."""
    logging.getLogger("clickhouse_driver").setLevel(logging.WARNING)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
