"""``hallstats worker``: the worker's processes, composed.

``--stage all`` (the default) runs counting (the Faust app) in this process,
``HALLSTATS_WORKER_INTAKE_PROCESSES`` intake processes beside it (two cores work
at once, one command still runs everything) and the automatic finalizer, a reader
(:mod:`consumers.autofinalize`) that the counting leader asks on a timer.
``--stage intake`` and ``--stage count`` run one stage alone, to scale each by
adding processes (up to the partition count of its input topic).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from consumers.autofinalize import FinalizeRunner
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from streams.stage_stats import StageCollector, StageTallies
from streams.worker import (
    STAGES,
    IntakeProcesses,
    child_process_setup,
    fewer_gc_passes,
    prepare_topics,
    run_intake,
)

log = logging.getLogger(__name__)


def run(settings: Settings, *, stage: str = "all", loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT)."""
    logging.getLogger("clickhouse_driver").setLevel(logging.WARNING)
    fewer_gc_passes()
    if stage not in STAGES:
        raise OperationalError(f"--stage: expected one of {', '.join(STAGES)}, got {stage!r}")
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    prepare_topics(settings)
    if stage == "intake":
        logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] %(message)s")
        tallies = StageTallies("intake")
        if settings.metrics_port:
            registry = CollectorRegistry()
            registry.register(StageCollector([tallies]))
            start_http_server(settings.metrics_port, addr="127.0.0.1", registry=registry)
        run_intake(settings, tallies, child=False)
        return
    children = IntakeProcesses(settings, settings.worker_intake_processes if stage == "all" else 0)
    children.start()
    finalizer = FinalizeRunner(
        settings, on_start=functools.partial(child_process_setup, "hs-finalize")
    )
    finalizer.start()
    try:
        _run_faust(settings, children, finalizer, loglevel)
    finally:
        children.stop()
        finalizer.stop()


def _run_faust(
    settings: Settings, children: IntakeProcesses, finalizer: FinalizeRunner, loglevel: str
) -> None:
    from faust import Worker

    from streams.app import build_app

    on_leader = (settings.finalize_check_seconds, finalizer.ask) if settings.auto_finalize else None
    app, _counting = build_app(settings, extra_stages=children.tallies, on_leader=on_leader)

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def watch_intake() -> None:
        children.watch()

    worker: Any = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
