"""The local stack's ClickHouse server: config, users, life cycle, client, database.

Its config.xml and users.xml are derived from the packaged ones in
``/etc/clickhouse-server`` with every path pointed under ``settings.stack_dir/clickhouse``
and every address on 127.0.0.1. It counts as ready when it answers ``SELECT version()``
through this module's own client. Process handling is ``deploy.processes``'.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from string import Template

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

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
    service_status,
    spawn,
    stack_dir,
    stop_process,
    stop_service,
    wait_until,
    write_atomic,
)
from deploy.zookeeper import start_zookeeper, stop_zookeeper, zookeeper_status
from hallstats.errors import OperationalError
from hallstats.settings import Settings

log = logging.getLogger(__name__)
_TEMPLATES = Path(__file__).resolve().parent / "clickhouse"

CLICKHOUSE_READY_TIMEOUT = 60.0

_CLICKHOUSE_ETC = Path("/etc/clickhouse-server")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- life cycle


def replica_settings(settings: Settings, index: int = 0) -> Settings:
    """The settings of server ``index`` of ``clickhouse_servers`` alone (no failover)."""
    servers = settings.clickhouse_servers
    if not 0 <= index < len(servers):
        raise OperationalError(f"ClickHouse replica: expected 1..{len(servers)}, got {index + 1}")
    host, native, http = servers[index]
    return settings.model_copy(
        update={
            "clickhouse_host": host,
            "clickhouse_port": native,
            "clickhouse_http_port": http,
            "clickhouse_replicas": "",
        }
    )


def _chosen(settings: Settings, replica: int | None) -> list[int]:
    """Server indexes: every replica of a cluster (one server without one), or one."""
    count = len(settings.clickhouse_servers) if settings.clickhouse_cluster else 1
    if replica is None:
        return list(range(count))
    replica_settings(settings, replica - 1)  # checks the range
    return [replica - 1]


def wait_for_clickhouse(settings: Settings, timeout: float, *, replica: int | None = None) -> None:
    """Block until each server answers ``SELECT``; OperationalError after ``timeout``."""
    for index in _chosen(settings, replica):
        server = replica_settings(settings, index)
        wait_until(
            f"ClickHouse at {LOOPBACK}:{server.clickhouse_port}",
            lambda server=server: _clickhouse_probe(server),  # type: ignore[misc]
            port=server.clickhouse_port,
            timeout=timeout,
            proc=None,
            logs=clickhouse_layout(settings, index).logs,
        )


def start_clickhouse(
    settings: Settings, *, progress: Progress = log.info, replica: int | None = None
) -> None:
    """Start each server (or replica ``replica``, counted from 1) unless it answers,
    wait for it, create the database. A cluster's ZooKeeper starts first."""
    require_loopback("HALLSTATS_CLICKHOUSE_HOST", settings.clickhouse_host)
    if settings.clickhouse_cluster:
        start_zookeeper(settings, progress=progress)
    for index in _chosen(settings, replica):
        _start_server(settings, index, progress)


def _start_server(settings: Settings, index: int, progress: Progress) -> None:
    server = replica_settings(settings, index)
    layout = clickhouse_layout(settings, index)
    name = layout.name
    port = server.clickhouse_port
    address = f"{LOOPBACK}:{port}"

    if listening(port):
        with contextlib.suppress(NotReady):
            detail = _clickhouse_probe(server)
            progress(f"{name}: already running at {address} ({detail})")
            _ensure_database(server, progress)
            return

    proc: subprocess.Popen[bytes] | None = None
    pid = find_pid(layout, cleanup=True)
    if pid is not None:
        progress(f"{name}: pid {pid} is up but not answering yet; waiting for it")
    else:
        require_free_port(port, "ClickHouse", "HALLSTATS_CLICKHOUSE_PORT")
        require_free_port(
            server.clickhouse_http_port, "ClickHouse (HTTP)", "HALLSTATS_CLICKHOUSE_HTTP_PORT"
        )
        command = clickhouse_command()
        write_clickhouse_config(settings, layout, index)
        progress(f"{name}: starting on {address} (log: {layout.logs[0]})")
        proc = spawn([*command, *layout.signature], layout)
    started = time.monotonic()
    try:
        wait_until(
            f"ClickHouse at {address}",
            lambda: _clickhouse_probe(server),
            port=port,
            timeout=CLICKHOUSE_READY_TIMEOUT,
            proc=proc,
            logs=layout.logs,
        )
    except OperationalError:
        if proc is not None:
            stop_process(proc.pid, layout)
        raise
    progress(f"{name}: ready at {address} in {time.monotonic() - started:.1f} s")
    _ensure_database(server, progress)


def stop_clickhouse(
    settings: Settings,
    *,
    progress: Progress = log.info,
    replica: int | None = None,
    graceful: bool = True,
) -> None:
    """Stop each server (SIGTERM, then SIGKILL after 20 s; ``graceful=False``: SIGKILL at
    once, a crash), or replica ``replica``; with all of them, the cluster's ZooKeeper."""
    for index in _chosen(settings, replica):
        stop_service(clickhouse_layout(settings, index), progress, graceful=graceful)
    if settings.clickhouse_cluster and replica is None:
        stop_zookeeper(settings, progress=progress)


def clickhouse_status(settings: Settings) -> list[ServiceStatus]:
    """What ``status`` reports: each server, and a cluster's ZooKeeper."""
    states = []
    for index in _chosen(settings, None):
        server = replica_settings(settings, index)
        port = server.clickhouse_port
        states.append(
            service_status(
                clickhouse_layout(settings, index),
                f"{LOOPBACK}:{port} (http {server.clickhouse_http_port})",
                port,
                lambda server=server: _clickhouse_probe(server),  # type: ignore[misc]
                "ClickHouse",
            )
        )
    if settings.clickhouse_cluster:
        states.append(zookeeper_status(settings))
    return states


def clickhouse_layout(settings: Settings, index: int = 0) -> Layout:
    """Server ``index``'s files under ``stack_dir/clickhouse`` (``clickhouse-2``, ... for
    more replicas); its signature is its config path."""
    root = stack_dir(settings) / ("clickhouse" if index == 0 else f"clickhouse-{index + 1}")
    config = root / "config.xml"
    return Layout(
        name=root.name,
        root=root,
        config=config,
        data=root / "data",
        pid_file=root / "clickhouse.pid",
        stdout_log=root / "stdout.log",
        logs=(root / "log" / "server.err.log", root / "stdout.log"),
        signature=(f"--config-file={config}",),
    )


def clickhouse_command() -> list[str]:
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


# --------------------------------------------------------------------------- config and users


def write_clickhouse_config(settings: Settings, layout: Layout, index: int = 0) -> None:
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
    server = replica_settings(settings, index)
    _set(root, "tcp_port", str(server.clickhouse_port))
    _set(root, "http_port", str(server.clickhouse_http_port))
    # Server default zone for DateTime without an explicit one: fixed, not the machine's.
    _set(root, "timezone", "UTC")
    ET.SubElement(root, "listen_host").text = LOOPBACK
    if settings.clickhouse_cluster:
        _add_cluster(root, settings, index)
    write_atomic(layout.config, _xml_text(tree))

    users_tree = ET.parse(users_base)
    _configure_users(users_tree.getroot(), settings)
    write_atomic(users_file, _xml_text(users_tree))


def _configure_users(root: ET.Element, settings: Settings) -> None:
    """Loopback-only networks for every user; the configured user gets the configured
    password. With a dedicated writer or reader, hallstats' own users file instead."""
    users = root.find("users")
    if users is None:
        raise OperationalError(f"ClickHouse: {_CLICKHOUSE_ETC / 'users.xml'} has no <users>")
    for element in root.iter():
        element.attrib.pop("incl", None)
    name = settings.clickhouse_user
    if not _XML_NAME.match(name):
        raise OperationalError(f"HALLSTATS_CLICKHOUSE_USER: expected a plain name, got {name!r}")
    if name != "default" or settings.clickhouse_reader_user:
        _add_hallstats_users(root, settings)  # replaces every packaged user
        return
    user = users.find(name)
    if user is None:
        raise OperationalError(f"ClickHouse: {_CLICKHOUSE_ETC / 'users.xml'} has no default user")
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


def _add_cluster(root: ET.Element, settings: Settings, index: int) -> None:
    """Merge deploy/clickhouse/cluster.xml (the production file) for server ``index``."""
    if not _IDENTIFIER.match(settings.clickhouse_cluster):
        raise OperationalError(
            "HALLSTATS_CLICKHOUSE_CLUSTER: expected letters, digits and '_', "
            f"got {settings.clickhouse_cluster!r}"
        )
    replicas = "\n".join(
        f"                <replica><host>{host}</host><port>{native}</port></replica>"
        for host, native, _http in settings.clickhouse_servers
    )
    _host, _native, http = settings.clickhouse_servers[index]
    text = Template((_TEMPLATES / "cluster.xml").read_text(encoding="utf-8")).substitute(
        cluster=settings.clickhouse_cluster,
        replicas=replicas,
        zookeeper_host=LOOPBACK,
        zookeeper_port=settings.stack_zookeeper_port,
        replica=f"r{index + 1}",
        host=LOOPBACK,
        interserver_port=http + 1,  # the HTTP port + 1 (8124 beside 8123)
    )
    for element in ET.fromstring(text):
        for old in root.findall(element.tag):
            root.remove(old)
        root.append(element)


def _add_hallstats_users(root: ET.Element, settings: Settings) -> None:
    """Replace the packaged users with deploy/clickhouse/hallstats-users.xml (the
    production file): the writer and the read-only reader, limited to the one
    database; the passwordless ``default`` and ``readonly`` users are gone."""
    reader = settings.clickhouse_reader_user
    if not reader or not _XML_NAME.match(reader):
        raise OperationalError(
            "HALLSTATS_CLICKHOUSE_READER_USER: a stack with its own writer user also makes "
            f"the read-only user; expected a plain name, got {reader!r}"
        )

    def digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    text = Template((_TEMPLATES / "hallstats-users.xml").read_text(encoding="utf-8")).substitute(
        writer=settings.clickhouse_user,
        writer_sha256=digest(settings.clickhouse_password.get_secret_value()),
        reader=reader,
        reader_sha256=digest(settings.clickhouse_reader_password.get_secret_value()),
        network=LOOPBACK,
        database=settings.clickhouse_database,
    )
    extra = ET.fromstring(text)
    users = root.find("users")
    if users is not None:  # least privilege: no passwordless default or readonly user beside
        for other in list(users):
            users.remove(other)
    for section in ("profiles", "users"):
        target = root.find(section)
        if target is None:
            target = ET.SubElement(root, section)
        for element in extra.find(section) or []:
            for old in target.findall(element.tag):
                target.remove(old)
            target.append(element)


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


# --------------------------------------------------------------------------- client and database


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
        raise NotReady(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from exc
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
