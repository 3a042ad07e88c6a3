"""The local stack's Kafka 4.x KRaft broker: jars, config, storage, life cycle, topics.

The broker's jars are resolved once per version from Maven Central into
``settings.cache_dir``; its config, data, logs and pid file live under
``settings.stack_dir/kafka``. It listens on 127.0.0.1 only (broker port from
``kafka_bootstrap``, controller port one above) and counts as ready when it answers a
metadata request. Process handling is ``deploy.processes``'.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from deploy.kafka_config import (
    KafkaNode,
    as_node_user,
    ensure_client_user,
    format_storage,
    kafka_nodes,
    node_layout,
    template,
    write_node_config,
)
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
    stop_process,
    stop_service,
    tail_text,
    wait_until,
)
from hallstats.errors import OperationalError
from hallstats.kafka import client_config, ensure_topics
from hallstats.settings import Settings

log = logging.getLogger(__name__)

LOG4J_VERSION = "2.24.3"
KAFKA_HEAP = "512m"
KAFKA_READY_TIMEOUT = 90.0
JAVA_HINT = "Kafka 4.x needs Java 17 or newer: apt-get install -y openjdk-17-jre-headless"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------- life cycle


def kafka_ports(settings: Settings) -> tuple[int, int]:
    """(broker, controller) ports of node 1: the first bootstrap entry, controller = +1."""
    node = kafka_nodes(settings)[0]
    return node.broker_port, node.controller_port


def wait_for_kafka(settings: Settings, timeout: float, *, node: int | None = None) -> None:
    """Block until every node (or node ``node``) answers a metadata request."""
    for each in _chosen(settings, node):
        _wait_for_node(settings, each, timeout)


def _wait_for_node(
    settings: Settings,
    node: KafkaNode,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    wait_until(
        f"Kafka node {node.node_id} at {LOOPBACK}:{node.broker_port}",
        _kafka_probe_fn(settings, node.broker_port),
        port=node.broker_port,
        timeout=timeout,
        proc=proc,
        logs=node.layout.logs,
    )


def start_kafka(
    settings: Settings, *, progress: Progress = log.info, node: int | None = None
) -> None:
    """Start every node (or node ``node``) unless it already answers, wait for them, then
    make sure the event topics exist.

    Data in each node's ``data`` folder survives a stop, so fault tests can restart a
    broker and find their topics and committed offsets again. The nodes of a cluster
    are all spawned before any is waited for: a controller quorum needs a majority up.
    """
    nodes = kafka_nodes(settings)
    spawned: list[tuple[KafkaNode, subprocess.Popen[bytes] | None]] = []
    for each in _chosen(settings, node):
        address = f"{LOOPBACK}:{each.broker_port}"
        if listening(each.broker_port):
            with contextlib.suppress(NotReady):
                detail = _kafka_probe_fn(settings, each.broker_port)()
                progress(f"{each.layout.name}: already running at {address} ({detail})")
                continue
        spawned.append((each, _spawn_node(settings, each, nodes, progress)))
    started = time.monotonic()
    for each, proc in spawned:
        address = f"{LOOPBACK}:{each.broker_port}"
        try:
            _wait_for_node(settings, each, KAFKA_READY_TIMEOUT, proc)
        except OperationalError:
            for other, other_proc in spawned:
                if other_proc is not None:
                    stop_process(other_proc.pid, other.layout)
            raise
        progress(f"{each.layout.name}: ready at {address} in {time.monotonic() - started:.1f} s")
    ensure_client_user(settings)
    _ensure_topics(settings)


def _spawn_node(
    settings: Settings, node: KafkaNode, nodes: list[KafkaNode], progress: Progress
) -> subprocess.Popen[bytes] | None:
    layout = node.layout
    pid = find_pid(layout, cleanup=True)
    if pid is not None:
        progress(f"{layout.name}: pid {pid} is up but not answering yet; waiting for it")
        return None
    for port in (node.broker_port, node.controller_port):
        require_free_port(port, "Kafka", "HALLSTATS_KAFKA_BOOTSTRAP")
    java = require_tool("java", JAVA_HINT)
    lib = _kafka_lib(settings, progress)
    log4j = write_node_config(settings, node, nodes)
    if not (layout.data / "meta.properties").exists():
        format_storage(settings, java, lib, log4j, node, nodes, progress)
    progress(f"{layout.name}: starting on {LOOPBACK}:{node.broker_port} (log: {layout.logs[0]})")
    return spawn(
        [
            java,
            f"-Xms{KAFKA_HEAP}",
            f"-Xmx{KAFKA_HEAP}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{lib}/*",
            *layout.signature,
        ],
        layout,
    )


def stop_kafka(
    settings: Settings,
    *,
    progress: Progress = log.info,
    graceful: bool = True,
    node: int | None = None,
) -> None:
    """Stop every node (or node ``node``); ``graceful=False`` sends SIGKILL at once (a
    crash, for fault tests)."""
    for each in reversed(_chosen(settings, node)):
        stop_service(each.layout, progress, graceful=graceful)


def kafka_status(settings: Settings) -> list[ServiceStatus]:
    """What ``status`` reports, one line per node."""
    return [
        service_status(
            each.layout,
            f"{LOOPBACK}:{each.broker_port}",
            each.broker_port,
            _kafka_probe_fn(settings, each.broker_port),
            "Kafka",
        )
        for each in kafka_nodes(settings)
    ]


def kafka_layout(settings: Settings) -> Layout:
    """Node 1's files (the only node of a one-node stack)."""
    return node_layout(settings, 1)


def _chosen(settings: Settings, node: int | None) -> list[KafkaNode]:
    nodes = kafka_nodes(settings)
    if node is None:
        return nodes
    if not 1 <= node <= len(nodes):
        raise OperationalError(f"Kafka node: expected 1..{len(nodes)}, got {node}")
    return [nodes[node - 1]]


# --------------------------------------------------------------------------- jars (Maven)


def _kafka_lib(settings: Settings, progress: Progress) -> Path:
    """Broker jars, resolved once per version into the cache with a throwaway pom.

    Resolved into a temporary sibling and renamed into place, so an interrupted ``mvn``
    never leaves a half-filled ``lib`` that later runs would trust.
    """
    version = settings.kafka_version
    home = settings.cache_dir.expanduser().resolve() / f"kafka-{version}"
    lib = home / "lib"
    if lib.is_dir() and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = require_tool(
        "mvn", "Kafka's jars are fetched from Maven Central: apt-get install -y maven"
    )
    home.mkdir(parents=True, exist_ok=True)
    progress(f"kafka: resolving kafka_2.13 {version} jars from Maven Central into {lib}")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".resolve-", dir=home))
    try:
        pom = work / "pom.xml"
        pom.write_text(
            template("pom.xml").substitute(kafka_version=version, log4j_version=LOG4J_VERSION),
            encoding="utf-8",
        )
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not any((work / "lib").glob("kafka_2.13-*.jar")):
            output = tail_text(_ANSI.sub("", result.stdout + result.stderr), 25)
            raise OperationalError(
                f"kafka: mvn could not resolve org.apache.kafka:kafka_2.13:{version} "
                f"(exit {result.returncode}); check the version and access to Maven Central. "
                f"mvn said:\n{output}"
            )
        try:
            (work / "lib").rename(lib)
        except OSError as exc:  # another process finished first: keep its copy
            if not lib.is_dir():
                raise OperationalError(
                    f"kafka: could not move resolved jars to {lib}: {exc}"
                ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not lib.is_dir():
            with contextlib.suppress(OSError):
                home.rmdir()  # only when empty: leave no dead version folder behind
    progress(f"kafka: jars resolved in {time.monotonic() - started:.1f} s")
    return lib


# --------------------------------------------------------------------------- admin and topics


def _admin(settings: Settings, port: int) -> AdminClient:
    """The one client configuration (TLS/SASL included), aimed at this node's port.

    error_cb and log_level=0 keep librdkafka from printing "connection refused" to
    stderr while we poll a broker that is still starting.
    """
    return AdminClient(
        client_config(
            as_node_user(settings),
            bootstrap_servers=f"{LOOPBACK}:{port}",
            socket_connection_setup_timeout_ms=2000,
            reconnect_backoff_max_ms=500,
            log_level=0,
            error_cb=_ignore_kafka_error,
        )
    )


def _ignore_kafka_error(_err: KafkaError) -> None:
    """Startup probes expect transport errors; the probe's own result reports failure."""


def _kafka_probe_fn(settings: Settings, port: int) -> Callable[[], str]:
    def probe() -> str:
        try:
            metadata = _admin(settings, port).list_topics(timeout=2.0)
        except KafkaException as exc:
            raise NotReady(_kafka_error_text(exc)) from exc
        if not metadata.brokers:
            raise NotReady("metadata lists no broker yet")
        topics = [t for t in metadata.topics if not t.startswith("__")]
        return f"cluster {metadata.cluster_id}, {len(topics)} topics"

    return probe


def _kafka_error_text(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return str(err.str()) if isinstance(err, KafkaError) else str(exc)


def _ensure_topics(settings: Settings) -> None:
    """The event topic and its DLQ, as every hallstats client creates them."""
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
