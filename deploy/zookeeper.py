"""ZooKeeper for replicated ClickHouse in the local stack (Debian's ``zookeeper``).

ClickHouse 18.16 keeps its replication log and ``ON CLUSTER`` DDL queue in
ZooKeeper. The stack runs one standalone server on 127.0.0.1
(``HALLSTATS_STACK_ZOOKEEPER_PORT``) when ``HALLSTATS_CLICKHOUSE_CLUSTER`` is set;
production runs an ensemble of three (see README, From one box to a cluster).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path

from deploy.processes import (
    LOOPBACK,
    Layout,
    NotReady,
    Progress,
    ServiceStatus,
    find_pid,
    listening,
    require_free_port,
    require_tool,
    service_status,
    spawn,
    stack_dir,
    stop_process,
    stop_service,
    wait_until,
    write_atomic,
)
from hallstats.errors import OperationalError
from hallstats.settings import Settings

log = logging.getLogger(__name__)

JAR = Path("/usr/share/java/zookeeper.jar")
HINT = "ZooKeeper comes from Debian: apt-get install -y --no-install-recommends zookeeper"


def zookeeper_layout(settings: Settings) -> Layout:
    root = stack_dir(settings) / "zookeeper"
    config = root / "zoo.cfg"
    return Layout(
        name="zookeeper",
        root=root,
        config=config,
        data=root / "data",
        pid_file=root / "zookeeper.pid",
        stdout_log=root / "stdout.log",
        logs=(root / "stdout.log",),
        signature=("org.apache.zookeeper.server.ZooKeeperServerMain", str(config)),
    )


def start_zookeeper(settings: Settings, *, progress: Progress = log.info) -> None:
    """Start the standalone server unless it answers already, and wait for it."""
    port = settings.stack_zookeeper_port
    layout = zookeeper_layout(settings)
    if listening(port):
        with contextlib.suppress(NotReady):
            progress(f"zookeeper: already running at {LOOPBACK}:{port} ({_probe(port)})")
            return
    proc = None
    if find_pid(layout, cleanup=True) is None:
        if not JAR.is_file():
            raise OperationalError(f"{JAR} is missing. {HINT}")
        require_free_port(port, "ZooKeeper", "HALLSTATS_STACK_ZOOKEEPER_PORT")
        java = require_tool("java", "ZooKeeper needs Java 17: apt-get install -y openjdk-17-jre")
        layout.data.mkdir(parents=True, exist_ok=True)
        write_atomic(
            layout.config,
            f"dataDir={layout.data}\nclientPort={port}\nclientPortAddress={LOOPBACK}\n"
            "tickTime=2000\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n",
        )
        progress(f"zookeeper: starting on {LOOPBACK}:{port}")
        proc = spawn(
            [java, "-Xmx128m", "-cp", str(JAR), *layout.signature],
            layout,
        )
    try:
        wait_until(
            f"ZooKeeper at {LOOPBACK}:{port}",
            lambda: _probe(port),
            port=port,
            timeout=60,
            proc=proc,
            logs=layout.logs,
        )
    except OperationalError:
        if proc is not None:
            stop_process(proc.pid, layout)
        raise
    progress(f"zookeeper: ready at {LOOPBACK}:{port}")


def stop_zookeeper(settings: Settings, *, progress: Progress = log.info) -> None:
    stop_service(zookeeper_layout(settings), progress, graceful=True)


def zookeeper_status(settings: Settings) -> ServiceStatus:
    port = settings.stack_zookeeper_port
    return service_status(
        zookeeper_layout(settings), f"{LOOPBACK}:{port}", port, lambda: _probe(port), "ZooKeeper"
    )


def _probe(port: int) -> str:
    """The ``srvr`` four-letter command: ready once it reports a mode."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as conn:
            conn.sendall(b"srvr")
            answer = conn.recv(4096).decode("utf-8", "replace")
    except OSError as exc:
        raise NotReady(str(exc)) from exc
    mode = next((line for line in answer.splitlines() if line.startswith("Mode:")), "")
    if not mode:
        raise NotReady(answer.strip()[:200] or "no answer yet")
    return mode.replace("Mode: ", "mode ")
