"""Connections to the ClickHouse server (native protocol, clickhouse-driver)."""

from __future__ import annotations

import logging
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseDriverError

from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.ddl import statements

log = logging.getLogger(__name__)


def connect(settings: Settings) -> Client:
    """A client on the ``default`` database: hallstats always qualifies table names,
    so a client works before ``settings.clickhouse_database`` exists. The password
    is passed through, never logged."""
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database="default",
        connect_timeout=5,
        send_receive_timeout=60,
        settings={"use_client_time_zone": False},
    )


def execute(client: Client, query: str, params: Any = None, *, settings: Settings) -> Any:
    """Run one statement, turning driver and socket failures into OperationalError."""
    try:
        return client.execute(query, params)
    except (ClickHouseDriverError, OSError, EOFError) as exc:
        raise OperationalError(
            f"ClickHouse at {settings.clickhouse_host}:{settings.clickhouse_port}: "
            f"{type(exc).__name__}: {exc}".strip()
        ) from exc


def ensure_schema(settings: Settings, client: Client | None = None) -> None:
    """Create the database and tables if missing (idempotent)."""
    own = client or connect(settings)
    try:
        for statement in statements(settings.clickhouse_database):
            execute(own, statement, settings=settings)
    finally:
        if client is None:
            own.disconnect()
