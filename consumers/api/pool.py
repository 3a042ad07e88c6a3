"""The read API's ClickHouse connections: a few reused, every one read-only."""

from __future__ import annotations

from hallstats.clickhouse import ClientPool
from hallstats.settings import Settings


class Clients(ClientPool):
    """A few reusable read-only connections for the API's request threads."""

    def __init__(self, settings: Settings, keep: int = 4) -> None:
        super().__init__(settings, keep, readonly=True)
