"""The Faust behaviour the worker relies on, so an upgrade that changes it fails here.

The worker uses no private Faust name (exactness comes from its own positions,
:mod:`streams.counting`); these tests pin the public behaviour it does use.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

ROOT = Path(__file__).resolve().parents[2]


def test_no_private_faust_or_mode_name_is_used() -> None:
    offenders = []
    for path in [*ROOT.glob("streams/*.py"), *ROOT.glob("consumers/**/*.py")]:
        tree = ast.parse(path.read_text())
        faust_names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {
                "faust",
                "mode",
            }:
                for alias in node.names:
                    if alias.name.startswith("_"):
                        offenders.append(f"{path.name}: from {node.module} import {alias.name}")
                    faust_names.add(alias.asname or alias.name)
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in {"consumer", "producer", "tables", "topics"}
            ):
                offenders.append(f"{path.name}:{node.lineno}: .{node.value.attr}.{node.attr}")
    assert offenders == []


def test_partition_signals_pass_sender_then_the_partitions() -> None:
    """streams.app reads the assignment as the second positional argument."""
    app = faust.App("contract-signals", broker="kafka://127.0.0.1:1")
    got: list[Any] = []

    @app.on_partitions_assigned.connect
    async def assigned(*args: Any, **_kwargs: Any) -> None:
        got.append(args[1])

    @app.on_partitions_revoked.connect
    async def revoked(*args: Any, **_kwargs: Any) -> None:
        got.append(args[1])

    tps = {TP("t", 0), TP("t", 3)}
    asyncio.run(app.on_partitions_assigned.send(tps))
    asyncio.run(app.on_partitions_revoked.send({TP("t", 3)}))
    assert got == [tps, {TP("t", 3)}]
    assert {tp.partition for tp in got[0] if tp.topic == "t"} == {0, 3}


def test_noack_take_yields_batches_of_events_with_their_messages() -> None:
    """The agent batches with noack_take and reads partition, offset, value, headers."""
    app = faust.App("contract-take", broker="kafka://127.0.0.1:1")
    topic = app.topic("t", key_serializer="raw", value_serializer="raw")
    seen: list[tuple[int, int, bytes, Any]] = []

    @app.agent(topic)
    async def agent(stream: Any) -> None:
        async for batch in stream.noack().noack_take(3, within=0.5):
            for event in batch:
                message = event.message
                seen.append((message.partition, message.offset, message.value, message.headers))
                await stream.ack(event)

    async def drive() -> None:
        async with agent.test_context() as context:
            for n in range(3):
                await context.put(f"v{n}".encode(), partition=1)  # offsets count from 0
            for _ in range(50):
                if len(seen) == 3:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(drive())
    assert [(p, o, v) for p, o, v, _h in seen] == [(1, 0, b"v0"), (1, 1, b"v1"), (1, 2, b"v2")]
