"""Targets for intake child processes in watchdog tests (importable by ``spawn``)."""

from __future__ import annotations

import time

from hallstats.settings import Settings
from streams.stage_stats import StageTallies


def hang(_settings: Settings, _tallies: StageTallies, *, child: bool) -> None:
    """A loop stuck in a call that never returns: it never beats."""
    time.sleep(3600)


def turn(_settings: Settings, tallies: StageTallies, *, child: bool) -> None:
    """A healthy loop: it beats every 0.1 s."""
    while True:
        tallies.beat()
        time.sleep(0.1)
