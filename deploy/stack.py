"""Local stack: Kafka 4.x KRaft (one node, or a three-node cluster) and ClickHouse, no Docker.

Both run as plain detached processes whose files (configs, data, logs, pid files) live
under ``settings.stack_dir``, so a test can start a second, throw-away stack next to the
developer's one by pointing ``stack_dir`` and the ports elsewhere. Everything listens on
127.0.0.1 only. Readiness is decided by asking each server a real question (Kafka
metadata, ``SELECT``), never by sleeping, because start times vary a lot between a warm
laptop and a loaded CI machine.

This module is the stack's public face (``hallstats stack``, the demo, tests, benchmarks);
the work is split by job:

- ``deploy.kafka``: the broker (Maven jars, KRaft config and storage, life cycle, topics);
- ``deploy.clickhouse``: the server (config and users, life cycle, client, database);
- ``deploy.processes``: spawning, pid files, /proc ownership, signals, waiting, ports.
"""

from __future__ import annotations

from deploy.clickhouse import (
    clickhouse_command,
    clickhouse_layout,
    clickhouse_status,
    start_clickhouse,
    stop_clickhouse,
    wait_for_clickhouse,
    write_clickhouse_config,
)
from deploy.kafka import (
    JAVA_HINT,
    kafka_ports,
    kafka_status,
    start_kafka,
    stop_kafka,
    wait_for_kafka,
)
from deploy.processes import Progress, ServiceStatus, listening, require_tool
from hallstats.settings import Settings

__all__ = [
    "ServiceStatus",
    "down",
    "kafka_ports",
    "start_clickhouse",
    "start_kafka",
    "status",
    "stop_clickhouse",
    "stop_kafka",
    "up",
    "wait_for_clickhouse",
    "wait_for_kafka",
]

# tests/integration/test_stack.py checks the generated ClickHouse config through these two names.
_clickhouse_layout = clickhouse_layout
_write_clickhouse_config = write_clickhouse_config


def up(settings: Settings, *, progress: Progress = print) -> None:
    """Start ClickHouse and Kafka (each only if it does not already answer) and wait for both.

    Tools are checked first so a missing one fails before anything is started (only for
    a service that is not already listening: one started elsewhere needs no local tools).
    """
    if not listening(settings.clickhouse_port):
        clickhouse_command()
    if not listening(kafka_ports(settings)[0]):
        require_tool("java", JAVA_HINT)
    start_clickhouse(settings, progress=progress)
    start_kafka(settings, progress=progress)


def down(settings: Settings, *, progress: Progress = print) -> None:
    """Stop both services (SIGTERM, then SIGKILL after 20 s); fine when nothing runs."""
    try:
        stop_kafka(settings, progress=progress)
    finally:
        stop_clickhouse(settings, progress=progress)


def status(settings: Settings) -> list[ServiceStatus]:
    """Report each service; read-only (stale pid files are left for ``up``/``down``)."""
    return [*kafka_status(settings), *clickhouse_status(settings)]
