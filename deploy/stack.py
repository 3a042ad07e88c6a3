"""Local single-node stack: a Kafka 4.x KRaft broker and a ClickHouse server, no Docker.

Both run as plain detached processes whose files (configs, data, logs, pid files) live
under ``settings.stack_dir``, so a test can start a second, throw-away stack next to the
developer's one by pointing ``stack_dir`` and the ports elsewhere. Everything listens on
127.0.0.1 only. Readiness is decided by asking each server a real question (Kafka
metadata, ``SELECT``), never by sleeping, because start times vary a lot between a warm
laptop and a loaded CI machine.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import errno
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from hallstats.errors import OperationalError
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

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

LOOPBACK = "127.0.0.1"
LOG4J_VERSION = "2.24.3"
KAFKA_HEAP = "512m"
KAFKA_READY_TIMEOUT = 90.0
CLICKHOUSE_READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
_KILL_TIMEOUT = 5.0
_POLL = 0.2
_JAVA_HINT = "Kafka 4.x needs Java 17 or newer: apt-get install -y openjdk-17-jre-headless"

_TEMPLATES = Path(__file__).resolve().parent
_CLICKHOUSE_ETC = Path("/etc/clickhouse-server")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Processes started by this Python process: kept so they are reaped (no zombies that
# still look alive to kill(pid, 0)) and so Popen does not warn about dropping them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What ``status`` says about one service; ``running`` means it answered a query."""

    name: str
    address: str
    running: bool
    detail: str


class _NotReady(Exception):
    """A probe got no (good) answer yet; the message says what it got instead."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where one service keeps its files, and how to recognise its process.

    ``signature`` holds arguments that only our own process has on its command line
    (it includes the absolute config path), so a recycled pid or another stack's server
    is never mistaken for ours.
    """

    name: str
    root: Path
    config: Path
    data: Path
    pid_file: Path
    stdout_log: Path
    logs: tuple[Path, ...]
    signature: tuple[str, ...]


# --------------------------------------------------------------------------- public API


def up(settings: Settings, *, progress: Progress = print) -> None:
    """Start ClickHouse and Kafka (each only if it does not already answer) and wait for both.

    Tools are checked first so a missing one fails before anything is started (only for
    a service that is not already listening: one started elsewhere needs no local tools).
    """
    if not _listening(settings.clickhouse_port):
        _clickhouse_command()
    if not _listening(kafka_ports(settings)[0]):
        _require_tool("java", _JAVA_HINT)
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
    return [_kafka_status(settings), _clickhouse_status(settings)]


def wait_for_kafka(settings: Settings, timeout: float) -> None:
    """Block until the broker answers a metadata request; OperationalError after ``timeout``."""
    port, _ = kafka_ports(settings)
    _wait_until(
        f"Kafka at {LOOPBACK}:{port}",
        _kafka_probe_fn(port),
        port=port,
        timeout=timeout,
        proc=None,
        logs=_kafka_layout(settings).logs,
    )


def wait_for_clickhouse(settings: Settings, timeout: float) -> None:
    """Block until ClickHouse answers ``SELECT``; OperationalError after ``timeout``."""
    _wait_until(
        f"ClickHouse at {LOOPBACK}:{settings.clickhouse_port}",
        lambda: _clickhouse_probe(settings),
        port=settings.clickhouse_port,
        timeout=timeout,
        proc=None,
        logs=_clickhouse_layout(settings).logs,
    )


def start_kafka(settings: Settings, *, progress: Progress = log.info) -> None:
    """Start the broker unless it already answers, wait for it, then make sure topics exist.

    Data in ``stack_dir/kafka/data`` survives a stop, so fault tests can restart the broker
    and find their topics and committed offsets again.
    """
    broker_port, controller_port = kafka_ports(settings)
    layout = _kafka_layout(settings)
    address = f"{LOOPBACK}:{broker_port}"
    probe = _kafka_probe_fn(broker_port)

    if _listening(broker_port):
        with contextlib.suppress(_NotReady):
            detail = probe()
            progress(f"kafka: already running at {address} ({detail})")
            _ensure_topics(settings, broker_port, progress)
            return

    proc: subprocess.Popen[bytes] | None = None
    pid = _find_pid(layout, cleanup=True)
    if pid is not None:
        progress(f"kafka: pid {pid} is up but not answering yet; waiting for it")
    else:
        for port in (broker_port, controller_port):
            _require_free_port(port, "Kafka", "HALLSTATS_KAFKA_BOOTSTRAP")
        java = _require_tool("java", _JAVA_HINT)
        lib = _kafka_lib(settings, progress)
        log4j = _write_kafka_config(settings, layout, broker_port, controller_port)
        if not (layout.data / "meta.properties").exists():
            _format_kafka_storage(java, lib, log4j, layout, progress)
        progress(f"kafka: starting on {address} (log: {layout.logs[0]})")
        proc = _spawn(
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
        _wait_until(
            f"Kafka at {address}",
            probe,
            port=broker_port,
            timeout=KAFKA_READY_TIMEOUT,
            proc=proc,
            logs=layout.logs,
        )
    except OperationalError:
        if proc is not None:
            _stop_process(proc.pid, layout)
        raise
    progress(f"kafka: ready at {address} in {time.monotonic() - started:.1f} s")
    _ensure_topics(settings, broker_port, progress)


def stop_kafka(settings: Settings, *, progress: Progress = log.info, graceful: bool = True) -> None:
    """Stop the broker; ``graceful=False`` sends SIGKILL at once (a crash, for fault tests)."""
    _stop_service(_kafka_layout(settings), progress, graceful=graceful)


def start_clickhouse(settings: Settings, *, progress: Progress = log.info) -> None:
    """Start ClickHouse unless it already answers, wait for it, create the database."""
    _require_loopback("HALLSTATS_CLICKHOUSE_HOST", settings.clickhouse_host)
    layout = _clickhouse_layout(settings)
    port = settings.clickhouse_port
    address = f"{LOOPBACK}:{port}"

    if _listening(port):
        with contextlib.suppress(_NotReady):
            detail = _clickhouse_probe(settings)
            progress(f"clickhouse: already running at {address} ({detail})")
            _ensure_database(settings, progress)
            return

    proc: subprocess.Popen[bytes] | None = None
    pid = _find_pid(layout, cleanup=True)
    if pid is not None:
        progress(f"clickhouse: pid {pid} is up but not answering yet; waiting for it")
    else:
        _require_free_port(port, "ClickHouse", "HALLSTATS_CLICKHOUSE_PORT")
        _require_free_port(
            settings.clickhouse_http_port, "ClickHouse (HTTP)", "HALLSTATS_CLICKHOUSE_HTTP_PORT"
        )
        command = _clickhouse_command()
        _write_clickhouse_config(settings, layout)
        progress(f"clickhouse: starting on {address} (log: {layout.logs[0]})")
        proc = _spawn([*command, *layout.signature], layout)
    started = time.monotonic()
    try:
        _wait_until(
            f"ClickHouse at {address}",
            lambda: _clickhouse_probe(settings),
            port=port,
            timeout=CLICKHOUSE_READY_TIMEOUT,
            proc=proc,
            logs=layout.logs,
        )
    except OperationalError:
        if proc is not None:
            _stop_process(proc.pid, layout)
        raise
    progress(f"clickhouse: ready at {address} in {time.monotonic() - started:.1f} s")
    _ensure_database(settings, progress)


def stop_clickhouse(settings: Settings, *, progress: Progress = log.info) -> None:
    """Stop ClickHouse (SIGTERM, then SIGKILL after 20 s)."""
    _stop_service(_clickhouse_layout(settings), progress, graceful=True)


def kafka_ports(settings: Settings) -> tuple[int, int]:
    """(broker, controller) ports: the broker's from ``kafka_bootstrap``, controller = +1."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65535:
        raise OperationalError(
            "HALLSTATS_KAFKA_BOOTSTRAP: expected host:port like '127.0.0.1:9092', "
            f"got {settings.kafka_bootstrap!r}"
        )
    _require_loopback("HALLSTATS_KAFKA_BOOTSTRAP", host)
    return int(port), int(port) + 1


# --------------------------------------------------------------------------- layouts


def _stack_dir(settings: Settings) -> Path:
    return settings.stack_dir.expanduser().resolve()


def _kafka_layout(settings: Settings) -> _Layout:
    root = _stack_dir(settings) / "kafka"
    config = root / "server.properties"
    return _Layout(
        name="kafka",
        root=root,
        config=config,
        data=root / "data",
        pid_file=root / "kafka.pid",
        stdout_log=root / "stdout.log",
        logs=(root / "server.log", root / "stdout.log"),
        signature=("kafka.Kafka", str(config)),
    )


def _clickhouse_layout(settings: Settings) -> _Layout:
    root = _stack_dir(settings) / "clickhouse"
    config = root / "config.xml"
    return _Layout(
        name="clickhouse",
        root=root,
        config=config,
        data=root / "data",
        pid_file=root / "clickhouse.pid",
        stdout_log=root / "stdout.log",
        logs=(root / "log" / "server.err.log", root / "stdout.log"),
        signature=(f"--config-file={config}",),
    )


# --------------------------------------------------------------------------- kafka


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
    mvn = _require_tool(
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
            output = _tail_text(_ANSI.sub("", result.stdout + result.stderr), 25)
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


def _write_kafka_config(
    settings: Settings, layout: _Layout, broker_port: int, controller_port: int
) -> Path:
    """Write server.properties and the log4j2 file; rewritten each start so settings apply."""
    layout.data.mkdir(parents=True, exist_ok=True)
    _write_atomic(
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
    _write_atomic(log4j, _template("kafka/log4j2.properties").substitute(log_file=layout.logs[0]))
    return log4j


def _format_kafka_storage(
    java: str, lib: Path, log4j: Path, layout: _Layout, progress: Progress
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
            f"{_tail_text(result.stdout + result.stderr, 20)}"
        )
    progress(f"kafka: storage formatted in {time.monotonic() - started:.1f} s")


def _kafka_cluster_id() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid`` makes it (url-safe base64, no '-' first)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


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
            raise _NotReady(_kafka_error_text(exc)) from exc
        if not metadata.brokers:
            raise _NotReady("metadata lists no broker yet")
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
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=1)
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


def _kafka_status(settings: Settings) -> ServiceStatus:
    port, _ = kafka_ports(settings)
    layout = _kafka_layout(settings)
    return _service_status(layout, f"{LOOPBACK}:{port}", port, _kafka_probe_fn(port), "Kafka")


# --------------------------------------------------------------------------- clickhouse


def _clickhouse_command() -> list[str]:
    """The server binary: Debian ships ``/usr/sbin/clickhouse-server``, upstream ``clickhouse``."""
    found = shutil.which("clickhouse-server")
    if found is None:
        found = next(
            (
                p
                for p in ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")
                if os.access(p, os.X_OK)
            ),
            None,
        )
    if found is not None:
        return [found]
    multi = shutil.which("clickhouse")
    if multi is not None:
        return [multi, "server"]
    raise OperationalError(
        "ClickHouse server not found (no clickhouse-server on PATH, in /usr/sbin or /usr/bin, "
        "and no `clickhouse` binary): apt-get install -y clickhouse-server"
    )


def _write_clickhouse_config(settings: Settings, layout: _Layout) -> None:
    """Derive config.xml/users.xml from the packaged ones, pointing every path into the stack.

    Starting from the installed files keeps the defaults that fit that server version;
    we only override paths, ports and addresses, and drop what a lone dev server must not
    have (interserver/secure ports, cluster and ZooKeeper includes that log noise).
    """
    base, users_base = _CLICKHOUSE_ETC / "config.xml", _CLICKHOUSE_ETC / "users.xml"
    for path in (base, users_base):
        if not path.is_file():
            raise OperationalError(
                f"ClickHouse: {path} is missing; it ships with the server package: "
                "apt-get install -y --reinstall clickhouse-server"
            )
    data, logs = layout.data, layout.root / "log"
    for folder in (data, logs):
        folder.mkdir(parents=True, exist_ok=True)
    users_file = layout.root / "users.xml"

    tree = ET.parse(base)
    root = tree.getroot()
    for tag in (
        "listen_host",
        "interserver_http_port",
        "interserver_https_port",
        "interserver_http_host",
        "https_port",
        "tcp_port_secure",
        "mysql_port",
        "postgresql_port",
        "grpc_port",
        "remote_servers",
        "zookeeper",
        "macros",
        "include_from",
        "keeper_server",
    ):
        for element in root.findall(tag):
            root.remove(element)
    for element in root.iter():
        element.attrib.pop("incl", None)
    _set(root, "path", f"{data}/")
    _set(root, "tmp_path", f"{data}/tmp/")
    _set(root, "user_files_path", f"{data}/user_files/")
    _set(root, "format_schema_path", f"{data}/format_schemas/")
    if root.find("access_control_path") is not None:
        _set(root, "access_control_path", f"{data}/access/")
    if root.find("user_directories/users_xml/path") is not None:
        _set(root, "user_directories/users_xml/path", str(users_file))
    _set(root, "users_config", str(users_file))
    _set(root, "logger/log", str(logs / "server.log"))
    _set(root, "logger/errorlog", str(logs / "server.err.log"))
    _set(root, "tcp_port", str(settings.clickhouse_port))
    _set(root, "http_port", str(settings.clickhouse_http_port))
    # Server default zone for DateTime without an explicit one: fixed, not the machine's.
    _set(root, "timezone", "UTC")
    ET.SubElement(root, "listen_host").text = LOOPBACK
    _write_atomic(layout.config, _xml_text(tree))

    users_tree = ET.parse(users_base)
    _configure_users(users_tree.getroot(), settings)
    _write_atomic(users_file, _xml_text(users_tree))


def _configure_users(root: ET.Element, settings: Settings) -> None:
    """Loopback-only networks for every user; the configured user gets the configured password."""
    users = root.find("users")
    if users is None:
        raise OperationalError(f"ClickHouse: {_CLICKHOUSE_ETC / 'users.xml'} has no <users>")
    for element in root.iter():
        element.attrib.pop("incl", None)
    name = settings.clickhouse_user
    if not _XML_NAME.match(name):
        raise OperationalError(f"HALLSTATS_CLICKHOUSE_USER: expected a plain name, got {name!r}")
    user = users.find(name)
    if user is None:
        template = users.find("default")
        if template is None:
            raise OperationalError(
                f"ClickHouse: {_CLICKHOUSE_ETC / 'users.xml'} has no default user"
            )
        user = copy.deepcopy(template)
        user.tag = name
        users.append(user)
    for each in users:
        networks = each.find("networks")
        if networks is None:
            networks = ET.SubElement(each, "networks")
        networks.clear()
        networks.set("replace", "replace")
        for ip in (LOOPBACK, "::1"):
            ET.SubElement(networks, "ip").text = ip
    for tag in ("password", "password_sha256_hex", "password_double_sha1_hex"):
        for element in user.findall(tag):
            user.remove(element)
    secret = settings.clickhouse_password.get_secret_value()
    if secret:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        ET.SubElement(user, "password_sha256_hex").text = digest
    else:
        ET.SubElement(user, "password").text = ""


def _clickhouse_client(settings: Settings) -> Client:
    return Client(
        host=LOOPBACK,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        connect_timeout=2,
        send_receive_timeout=10,
        sync_request_timeout=2,
    )


def _clickhouse_probe(settings: Settings) -> str:
    client = _clickhouse_client(settings)
    try:
        rows = client.execute("SELECT version()")
    except (ch_errors.Error, OSError, EOFError) as exc:
        raise _NotReady(
            str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        ) from exc
    finally:
        client.disconnect()
    return f"ClickHouse {rows[0][0]}"


def _ensure_database(settings: Settings, progress: Progress) -> None:
    name = settings.clickhouse_database
    if not _IDENTIFIER.match(name):
        raise OperationalError(
            f"HALLSTATS_CLICKHOUSE_DATABASE: expected letters, digits and '_', got {name!r}"
        )
    client = _clickhouse_client(settings)
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    except (ch_errors.Error, OSError, EOFError) as exc:
        raise OperationalError(f"ClickHouse: creating database {name!r} failed: {exc}") from exc
    finally:
        client.disconnect()
    log.debug("database %s present", name)


def _clickhouse_status(settings: Settings) -> ServiceStatus:
    port = settings.clickhouse_port
    return _service_status(
        _clickhouse_layout(settings),
        f"{LOOPBACK}:{port} (http {settings.clickhouse_http_port})",
        port,
        lambda: _clickhouse_probe(settings),
        "ClickHouse",
    )


# --------------------------------------------------------------------------- processes


def _spawn(args: Sequence[str], layout: _Layout) -> subprocess.Popen[bytes]:
    """Start detached (own session: survives our exit, and the whole group can be signalled)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.stdout_log.open("ab") as out:
        # A marker per start, so the tail shown after a failed start is read in context.
        out.write(f"=== {datetime.now(UTC).isoformat()} starting {args[0]}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(args),
            cwd=layout.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    _write_atomic(layout.pid_file, f"{proc.pid}\n")
    log.debug("%s started as pid %d: %s", layout.name, proc.pid, " ".join(args))
    return proc


def _find_pid(layout: _Layout, *, cleanup: bool) -> int | None:
    """Our live server's pid: from the pid file, else by its command line (pid file lost)."""
    try:
        pid: int | None = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _alive(pid) and _is_ours(pid, layout):
        return pid
    if layout.pid_file.exists() and cleanup:
        log.info("removing stale pid file %s (pid %s)", layout.pid_file, pid)
        layout.pid_file.unlink(missing_ok=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            candidate = int(entry.name)
            if candidate != os.getpid() and _is_ours(candidate, layout) and _alive(candidate):
                if cleanup:
                    _write_atomic(layout.pid_file, f"{candidate}\n")
                return candidate
    return None


def _is_ours(pid: int, layout: _Layout) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = raw.decode(errors="replace").split("\0")
    return all(part in args for part in layout.signature)


def _alive(pid: int) -> bool:
    """True for a running process; a zombie counts as dead (and is reaped if it is ours)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group we created; a process found another way gets it alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop_process(pid: int, layout: _Layout, *, graceful: bool = True) -> float:
    """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; returns the seconds it took."""
    started = time.monotonic()
    if graceful:
        _signal(pid, signal.SIGTERM)
        deadline = started + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL",
                layout.name,
                pid,
                STOP_TIMEOUT,
            )
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            raise OperationalError(f"{layout.name}: pid {pid} is still alive after SIGKILL")
    layout.pid_file.unlink(missing_ok=True)
    return time.monotonic() - started


def _stop_service(layout: _Layout, progress: Progress, *, graceful: bool) -> None:
    pid = _find_pid(layout, cleanup=True)
    if pid is None:
        layout.pid_file.unlink(missing_ok=True)
        progress(f"{layout.name}: not running")
        return
    progress(f"{layout.name}: stopping pid {pid}" + ("" if graceful else " with SIGKILL"))
    took = _stop_process(pid, layout, graceful=graceful)
    progress(f"{layout.name}: stopped in {took:.1f} s")


def _wait_until(
    what: str,
    probe: Callable[[], str],
    *,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    logs: Sequence[Path],
) -> str:
    """Poll ``probe`` until it answers; fail fast if the process we started has exited."""
    deadline = time.monotonic() + timeout
    last = "port not open yet"
    while True:
        if _listening(port):
            try:
                return probe()
            except _NotReady as exc:
                last = str(exc)
        if proc is not None and proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            raise OperationalError(
                f"{what}: the server exited with code {proc.returncode} while starting."
                f"{_log_excerpt(logs)}"
            )
        if time.monotonic() >= deadline:
            raise OperationalError(
                f"{what} did not answer within {timeout:.0f} s (last: {last}).{_log_excerpt(logs)}"
            )
        time.sleep(_POLL)


def _service_status(
    layout: _Layout, address: str, port: int, probe: Callable[[], str], what: str
) -> ServiceStatus:
    pid = _find_pid(layout, cleanup=False)
    owner = f"pid {pid}" if pid is not None else "not started by this stack"
    if _listening(port):
        try:
            return ServiceStatus(layout.name, address, True, f"{owner}, {probe()}")
        except _NotReady as exc:
            problem = f"answers on the port but not as {what}: {exc}"
    else:
        problem = "port not open"
    if pid is None:
        detail = (
            "stopped"
            if problem == "port not open"
            else f"port taken by another program ({problem})"
        )
    else:
        detail = f"pid {pid} alive but not ready ({problem}); log: {layout.logs[0]}"
    return ServiceStatus(layout.name, address, False, detail)


# --------------------------------------------------------------------------- small helpers


def _require_tool(name: str, how: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise OperationalError(f"`{name}` not found on PATH. {how}")
    return found


def _require_loopback(setting: str, host: str) -> None:
    if not (host.startswith("127.") or host in {"localhost", "::1", "[::1]"}):
        raise OperationalError(
            f"{setting}: the local stack only serves 127.0.0.1, got host {host!r}; "
            "point it at 127.0.0.1 or use a server you run elsewhere without `stack up`"
        )


_LISTEN_STATE = "0A"
_REACHES_LOOPBACK = {
    ipaddress.ip_address(a) for a in ("127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1")
}


def _listening(port: int) -> bool:
    """Something listens where 127.0.0.1:port would reach it (cheap check before a probe).

    Read from the kernel's socket table rather than by connecting, because a bare connect
    makes ClickHouse log "Client has not sent any data" to its error log on every poll.
    """
    found_table = False
    for table, ipv6 in ((Path("/proc/net/tcp"), False), (Path("/proc/net/tcp6"), True)):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _LISTEN_STATE:
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and _proc_net_address(address, ipv6) in _REACHES_LOOPBACK:
                return True
    if found_table:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _proc_net_address(text: str, ipv6: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Decode /proc/net/tcp's address: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(text)
    if not ipv6:
        return ipaddress.IPv4Address(raw[::-1])
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def _require_free_port(port: int, what: str, setting: str) -> None:
    """Fail before starting if the port is held by a process that is not our server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OperationalError(
                f"{what}: port {port} on {LOOPBACK} is in use by something that does not answer "
                f"as {what}; find it with `ss -ltnp 'sport = :{port}'` and stop it, or choose "
                f"another port ({setting})"
            ) from exc


def _template(name: str) -> Template:
    return Template((_TEMPLATES / name).read_text(encoding="utf-8"))


def _set(root: ET.Element, path: str, text: str) -> None:
    """Set the text of ``root/path``, creating missing elements along the way."""
    element = root
    for tag in path.split("/"):
        child = element.find(tag)
        if child is None:
            child = ET.SubElement(element, tag)
        element = child
    element.text = text


def _xml_text(tree: ET.ElementTree[ET.Element]) -> str:
    ET.indent(tree)
    return (
        '<?xml version="1.0"?>\n<!-- Generated by deploy/stack.py -->\n'
        + ET.tostring(tree.getroot(), encoding="unicode")
        + "\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are plain config and pid files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_excerpt(paths: Sequence[Path], lines: int = 15) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"\n--- last lines of {path} ---\n{_tail_text(text, lines)}")
    return "".join(parts) if parts else f" No log output in {', '.join(map(str, paths))}."
