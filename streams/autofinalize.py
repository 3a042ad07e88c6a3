"""Automatic finalization, run by the leader worker on a timer.

A week is finalized when its grace period has passed on the clock and in the
event stream (:mod:`consumers.lifecycle`); ``finalize`` then still waits until
everything already in Kafka has been processed and reconciles before freezing.
Failures (timeout, disagreement) are logged and retried on the next tick.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import faust

from consumers.clickhouse import connect, ensure_schema
from consumers.finalize import finalize
from consumers.lifecycle import due_weeks
from hallstats.errors import HallstatsError
from hallstats.settings import Settings

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


def install(app: faust.App, settings: Settings) -> None:
    if not settings.auto_finalize:
        return

    @app.timer(settings.finalize_check_seconds, on_leader=True)  # type: ignore[untyped-decorator]
    async def auto_finalize() -> None:
        try:
            await asyncio.to_thread(finalize_due, settings)
        except HallstatsError as exc:
            log.warning("auto-finalize check failed: %s", exc)
