"""Fixtures the gateway's integration test modules share: each module gets its own
topics, database, gateway process and terminal tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hallstats.kafka import ensure_topics
from hallstats.settings import Settings
from schemas.ddl import ensure_schema
from tests.support.gateway import HALL_A, HALL_B, Gateway, add_terminal, cli_terminal, start_gateway


@pytest.fixture(scope="module")
def base(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """This module's own topics and database; rates high enough never to throttle."""
    settings = stack.isolated(
        "hsgw",
        tmp_path_factory.mktemp("gateway"),
        gateway_rate_per_second=100_000.0,
        gateway_burst=100_000,
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    ensure_schema(settings)
    return settings


@pytest.fixture(scope="module")
def gw(base: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(base, tmp_path_factory.mktemp("gwlog") / "gateway.log")
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def token_a(base: Settings) -> str:
    return add_terminal(base, **cli_terminal(HALL_A))


@pytest.fixture(scope="module")
def token_b(base: Settings) -> str:
    return add_terminal(base, **cli_terminal(HALL_B))
