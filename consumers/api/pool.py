"""The read API's ClickHouse connections: a few reused, every one read-only."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

from clickhouse_driver import Client

from hallstats.clickhouse import connect
from hallstats.errors import OperationalError
from hallstats.settings import Settings


class Clients:
    """A few reusable read-only connections (a clickhouse-driver Client is not thread-safe)."""

    def __init__(self, settings: Settings, keep: int = 4) -> None:
        self._settings = settings
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._keep = keep

    def _new(self) -> Client:
        client = connect(self._settings)
        client.settings["readonly"] = 2  # the server refuses writes and DDL from this session
        return client

    @contextmanager
    def client(self) -> Iterator[Client]:
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._new()
        broken = False
        try:
            yield client
        except OperationalError:
            broken = True  # a failed connection is not reused
            raise
        finally:
            if broken or self._idle.qsize() >= self._keep:
                client.disconnect()
            else:
                self._idle.put(client)  # also after a 4xx raised inside the block

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().disconnect()
