"""Automatic finalization, asked for by the leader worker on a timer.

A week is finalized when its grace period has passed on the clock and in the
event stream (:mod:`consumers.lifecycle`); ``finalize`` then still waits until
everything already in Kafka has been processed and reconciles before freezing.
Failures (timeout, disagreement) are logged and retried on the next tick.

The work runs in a child process (:class:`FinalizeRunner`): reconciling a week
holds the interpreter for a while, and in the counting process that time was
taken from counting (a historical replay finalizes a week every few seconds).
Only the leader asks (the worker's leader hook, :func:`streams.app.build_app`), so one
finalization runs per group at a time.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType

from consumers.finalize import finalize
from consumers.lifecycle import due_weeks
from hallstats.clickhouse import connect
from hallstats.errors import HallstatsError
from hallstats.settings import Settings
from schemas.ddl import ensure_schema

log = logging.getLogger(__name__)


def finalize_due(settings: Settings, now: datetime | None = None) -> list[str]:
    """Finalize every due week; returns what happened, one line per week."""
    moment = now or datetime.now(UTC)
    client = connect(settings)
    try:
        ensure_schema(settings, client)
        weeks = due_weeks(client, settings, moment)
    finally:
        client.disconnect()
    done = []
    for week in weeks:
        try:
            result = finalize(settings, week, now=moment)
        except HallstatsError as exc:
            log.warning("auto-finalize %s postponed: %s", week, exc)
            done.append(f"{week}: postponed ({exc})")
            continue
        log.info("auto-finalized %s as version %s", week, result.snapshot.version)
        done.append(f"{week}: v{result.snapshot.version}")
    return done


def _serve(settings: Settings, asked: EventType, on_start: Callable[[], None]) -> None:
    on_start()
    while True:
        asked.wait()
        asked.clear()
        try:
            finalize_due(settings)
        except HallstatsError as exc:
            log.warning("auto-finalize check failed: %s", exc)


class FinalizeRunner:
    """A child process that runs :func:`finalize_due` each time it is asked.

    A spawned process (a fork of the threaded worker could inherit a held lock);
    asking is cheap and never blocks, and a check already asked for is not queued
    twice.
    """

    def __init__(self, settings: Settings, on_start: Callable[[], None] = lambda: None) -> None:
        self._settings = settings
        self._on_start = on_start
        self._context = multiprocessing.get_context("spawn")
        self._asked = self._context.Event()
        self._proc: BaseProcess | None = None

    def start(self) -> None:
        self._proc = self._context.Process(
            target=_serve,
            args=(self._settings, self._asked, self._on_start),
            name="hallstats-finalize",
            daemon=True,
        )
        self._proc.start()

    def ask(self) -> None:
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                log.error(
                    "auto-finalize process exited with %s; restarting it", self._proc.exitcode
                )
            self.start()
        self._asked.set()

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)
