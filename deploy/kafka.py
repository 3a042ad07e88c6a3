"""The local stack's Kafka 4.x KRaft broker: jars, config, storage, life cycle, topics.

The broker's jars are resolved once per version from Maven Central into
``settings.cache_dir``; its config, data, logs and pid file live under
``settings.stack_dir/kafka``. It listens on 127.0.0.1 only (broker port from
``kafka_bootstrap``, controller port one above) and counts as ready when it answers a
metadata request. Process handling is ``deploy.processes``'.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from deploy.processes import (
    LOOPBACK,
    Layout,
    NotReady,
    Progress,
    ServiceStatus,
    find_pid,
    listening,
    require_free_port,
    require_loopback,
    require_tool,
    service_status,
    spawn,
    stack_dir,
    stop_process,
    stop_service,
    tail_text,
    wait_until,
    write_atomic,
)
from hallstats.errors import OperationalError
from hallstats.kafka import DLQ_TOPIC_CONFIG, set_topic_configs
from hallstats.settings import Settings

log = logging.getLogger(__name__)

LOG4J_VERSION = "2.24.3"
KAFKA_HEAP = "512m"
KAFKA_READY_TIMEOUT = 90.0
JAVA_HINT = "Kafka 4.x needs Java 17 or newer: apt-get install -y openjdk-17-jre-headless"

_TEMPLATES = Path(__file__).resolve().parent
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------- life cycle


def kafka_ports(settings: Settings) -> tuple[int, int]:
    """(broker, controller) ports: the broker's from ``kafka_bootstrap``, controller = +1."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65535:
        raise OperationalError(
            "HALLSTATS_KAFKA_BOOTSTRAP: expected host:port like '127.0.0.1:9092', "
            f"got {settings.kafka_bootstrap!r}"
        )
    require_loopback("HALLSTATS_KAFKA_BOOTSTRAP", host)
    return int(port), int(port) + 1


def wait_for_kafka(settings: Settings, timeout: float) -> None:
    """Block until the broker answers a metadata request; OperationalError after ``timeout``."""
    port, _ = kafka_ports(settings)
    wait_until(
        f"Kafka at {LOOPBACK}:{port}",
        _kafka_probe_fn(port),
        port=port,
        timeout=timeout,
        proc=None,
        logs=kafka_layout(settings).logs,
    )


def start_kafka(settings: Settings, *, progress: Progress = log.info) -> None:
    """Start the broker unless it already answers, wait for it, then make sure topics exist.

    Data in ``stack_dir/kafka/data`` survives a stop, so fault tests can restart the broker
    and find their topics and committed offsets again.
    """
    broker_port, controller_port = kafka_ports(settings)
    layout = kafka_layout(settings)
    address = f"{LOOPBACK}:{broker_port}"
    probe = _kafka_probe_fn(broker_port)

    if listening(broker_port):
        with contextlib.suppress(NotReady):
            detail = probe()
            progress(f"kafka: already running at {address} ({detail})")
            _ensure_topics(settings, broker_port, progress)
            return

    proc: subprocess.Popen[bytes] | None = None
    pid = find_pid(layout, cleanup=True)
    if pid is not None:
        progress(f"kafka: pid {pid} is up but not answering yet; waiting for it")
    else:
        for port in (broker_port, controller_port):
            require_free_port(port, "Kafka", "HALLSTATS_KAFKA_BOOTSTRAP")
        java = require_tool("java", JAVA_HINT)
        lib = _kafka_lib(settings, progress)
        log4j = _write_kafka_config(settings, layout, broker_port, controller_port)
        if not (layout.data / "meta.properties").exists():
            _format_kafka_storage(java, lib, log4j, layout, progress)
        progress(f"kafka: starting on {address} (log: {layout.logs[0]})")
        proc = spawn(
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
    started = time.monotonic()
    try:
        wait_until(
            f"Kafka at {address}",
            probe,
            port=broker_port,
            timeout=KAFKA_READY_TIMEOUT,
            proc=proc,
            logs=layout.logs,
        )
    except OperationalError:
        if proc is not None:
            stop_process(proc.pid, layout)
        raise
    progress(f"kafka: ready at {address} in {time.monotonic() - started:.1f} s")
    _ensure_topics(settings, broker_port, progress)


def stop_kafka(settings: Settings, *, progress: Progress = log.info, graceful: bool = True) -> None:
    """Stop the broker; ``graceful=False`` sends SIGKILL at once (a crash, for fault tests)."""
    stop_service(kafka_layout(settings), progress, graceful=graceful)


def kafka_status(settings: Settings) -> ServiceStatus:
    """What ``status`` reports for the broker."""
    port, _ = kafka_ports(settings)
    layout = kafka_layout(settings)
    return service_status(layout, f"{LOOPBACK}:{port}", port, _kafka_probe_fn(port), "Kafka")


def kafka_layout(settings: Settings) -> Layout:
    """The broker's files under ``stack_dir/kafka``; its signature is ``kafka.Kafka <config>``."""
    root = stack_dir(settings) / "kafka"
    config = root / "server.properties"
    return Layout(
        name="kafka",
        root=root,
        config=config,
        data=root / "data",
        pid_file=root / "kafka.pid",
        stdout_log=root / "stdout.log",
        logs=(root / "server.log", root / "stdout.log"),
        signature=("kafka.Kafka", str(config)),
    )


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
            _template("kafka/pom.xml").substitute(
                kafka_version=version, log4j_version=LOG4J_VERSION
            ),
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


# --------------------------------------------------------------------------- config and storage


def _write_kafka_config(
    settings: Settings, layout: Layout, broker_port: int, controller_port: int
) -> Path:
    """Write server.properties and the log4j2 file; rewritten each start so settings apply."""
    layout.data.mkdir(parents=True, exist_ok=True)
    write_atomic(
        layout.config,
        _template("kafka/server.properties").substitute(
            host=LOOPBACK,
            broker_port=broker_port,
            controller_port=controller_port,
            log_dirs=layout.data,
            partitions=settings.partitions,
        ),
    )
    log4j = layout.root / "log4j2.properties"
    write_atomic(log4j, _template("kafka/log4j2.properties").substitute(log_file=layout.logs[0]))
    return log4j


def _format_kafka_storage(
    java: str, lib: Path, log4j: Path, layout: Layout, progress: Progress
) -> None:
    """Format the KRaft log dir once (``--standalone``: this node is the only voter)."""
    progress(f"kafka: formatting storage in {layout.data}")
    started = time.monotonic()
    result = subprocess.run(
        [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _kafka_cluster_id(),
            "-c",
            str(layout.config),
            "--ignore-formatted",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise OperationalError(
            f"kafka: formatting {layout.data} failed (exit {result.returncode}):\n"
            f"{tail_text(result.stdout + result.stderr, 20)}"
        )
    progress(f"kafka: storage formatted in {time.monotonic() - started:.1f} s")


def _kafka_cluster_id() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid`` makes it (url-safe base64, no '-' first)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _template(name: str) -> Template:
    return Template((_TEMPLATES / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- admin and topics


def _admin(port: int) -> AdminClient:
    # error_cb and log_level=0 keep librdkafka from printing "connection refused" to stderr
    # while we poll a broker that is still starting.
    # (Typed as Any because the stubs do not admit callbacks in the config dict.)
    conf: dict[str, Any] = {
        "bootstrap.servers": f"{LOOPBACK}:{port}",
        "socket.connection.setup.timeout.ms": 2000,
        "reconnect.backoff.max.ms": 500,
        "log_level": 0,
        "error_cb": _ignore_kafka_error,
    }
    return AdminClient(conf)


def _ignore_kafka_error(_err: KafkaError) -> None:
    """Startup probes expect transport errors; the probe's own result reports failure."""


def _kafka_probe_fn(port: int) -> Callable[[], str]:
    def probe() -> str:
        try:
            metadata = _admin(port).list_topics(timeout=2.0)
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


def _ensure_topics(settings: Settings, port: int, progress: Progress) -> None:
    """Create the event topic and its DLQ if absent (a race with another creator is fine)."""
    admin = _admin(port)
    wanted = {settings.topic: settings.partitions, settings.dlq_topic: 1}
    try:
        existing = admin.list_topics(timeout=10.0).topics
    except KafkaException as exc:
        raise OperationalError(f"kafka: listing topics failed: {_kafka_error_text(exc)}") from exc
    for name, partitions in wanted.items():
        if name in existing and len(existing[name].partitions) != partitions:
            log.warning(
                "topic %s has %d partitions, settings ask for %d; leaving it as it is",
                name,
                len(existing[name].partitions),
                partitions,
            )
    configs = {settings.dlq_topic: dict(DLQ_TOPIC_CONFIG)}  # a dead letter may exceed 1 MB
    set_topic_configs(admin, {n: c for n, c in configs.items() if n in existing})
    missing = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config=configs.get(name, {}),
        )
        for name, partitions in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    futures = admin.create_topics(missing, operation_timeout=30.0, request_timeout=30.0)
    for name, future in futures.items():
        try:
            future.result(timeout=40.0)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise OperationalError(
                f"kafka: creating topic {name!r} failed: {_kafka_error_text(exc)}"
            ) from exc
        except TimeoutError as exc:
            raise OperationalError(f"kafka: creating topic {name!r} timed out after 40 s") from exc
        count = wanted[name]
        progress(f"kafka: created topic {name} ({count} partition{'' if count == 1 else 's'})")
