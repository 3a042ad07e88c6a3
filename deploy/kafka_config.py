"""The local stack's Kafka nodes: which ports and folders, their config and storage.

One node by default; ``HALLSTATS_STACK_KAFKA_BROKERS=3`` (or ``stack up --brokers 3``)
makes a three-node KRaft cluster whose controller quorum has three voters. Node ``i``
takes the ``i``-th entry of ``HALLSTATS_KAFKA_BOOTSTRAP`` as its broker port, or the
first port plus ``2(i-1)`` when the list is shorter; its controller port is one above.
With ``HALLSTATS_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` the nodes speak TLS (certificates
from :mod:`deploy.tls`) and SCRAM, and the client user of the settings is created when
the storage is first formatted.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from deploy.processes import (
    LOOPBACK,
    Layout,
    Progress,
    require_loopback,
    stack_dir,
    tail_text,
    write_atomic,
)
from deploy.tls import loopback_pki
from hallstats.errors import OperationalError
from hallstats.kafka import min_insync_replicas, replication_factor
from hallstats.settings import Settings

_TEMPLATES = Path(__file__).resolve().parent / "kafka"
BROKER_USER = "broker"  # the nodes' own SCRAM user, for replication between them


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    layout: Layout


def kafka_nodes(settings: Settings) -> list[KafkaNode]:
    """The stack's nodes, node 1 first (its folder is ``stack_dir/kafka``)."""
    count = settings.stack_kafka_brokers
    entries = [e.strip() for e in settings.kafka_bootstrap.split(",") if e.strip()]
    ports = [_port(entry) for entry in entries]
    if not ports:
        raise OperationalError(
            "HALLSTATS_KAFKA_BOOTSTRAP: expected host:port like '127.0.0.1:9092', got ''"
        )
    while len(ports) < count:
        ports.append(ports[0] + 2 * len(ports))
    return [
        KafkaNode(i + 1, port, port + 1, node_layout(settings, i + 1))
        for i, port in enumerate(ports[:count])
    ]


def _port(entry: str) -> int:
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65535:
        raise OperationalError(
            f"HALLSTATS_KAFKA_BOOTSTRAP: expected host:port like '127.0.0.1:9092', got {entry!r}"
        )
    require_loopback("HALLSTATS_KAFKA_BOOTSTRAP", host)
    return int(port)


def node_layout(settings: Settings, node_id: int = 1) -> Layout:
    """A node's files; its signature is ``kafka.Kafka <config>``."""
    root = stack_dir(settings) / ("kafka" if node_id == 1 else f"kafka-{node_id}")
    config = root / "server.properties"
    return Layout(
        name="kafka" if node_id == 1 else f"kafka-{node_id}",
        root=root,
        config=config,
        data=root / "data",
        pid_file=root / "kafka.pid",
        stdout_log=root / "stdout.log",
        logs=(root / "server.log", root / "stdout.log"),
        signature=("kafka.Kafka", str(config)),
    )


def write_node_config(settings: Settings, node: KafkaNode, nodes: list[KafkaNode]) -> Path:
    """Write the node's server.properties (0600: it may hold the broker password) and
    log4j2 file; rewritten on each start so settings apply. Returns the log4j file."""
    layout = node.layout
    layout.data.mkdir(parents=True, exist_ok=True)
    if len(nodes) == 1:
        quorum = f"controller.quorum.bootstrap.servers={LOOPBACK}:{node.controller_port}"
    else:
        voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in nodes)
        quorum = f"controller.quorum.voters={voters}"
    replicas = replication_factor(len(nodes))
    write_atomic(
        layout.config,
        template("server.properties").substitute(
            node_id=node.node_id,
            quorum=quorum,
            listener=_listener(settings),
            host=LOOPBACK,
            broker_port=node.broker_port,
            controller_port=node.controller_port,
            log_dirs=layout.data,
            partitions=settings.partitions,
            replicas=replicas,
            min_isr=min_insync_replicas(replicas),
            security=_security_block(settings),
        ),
    )
    os.chmod(layout.config, 0o600)
    log4j = layout.root / "log4j2.properties"
    write_atomic(log4j, template("log4j2.properties").substitute(log_file=layout.logs[0]))
    return log4j


def _listener(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol
    if protocol not in ("PLAINTEXT", "SASL_SSL"):
        raise OperationalError(
            "HALLSTATS_KAFKA_SECURITY_PROTOCOL: the local stack runs PLAINTEXT or SASL_SSL, "
            f"got {protocol!r}"
        )
    return protocol


def _security_block(settings: Settings) -> str:
    if _listener(settings) == "PLAINTEXT":
        return ""
    pki = loopback_pki(tls_dir(settings))
    return "\n" + template("sasl-ssl.properties").substitute(
        broker_user=BROKER_USER,
        broker_password=_broker_password(settings),
        keystore=pki.server_keystore,
        truststore=pki.ca_file,
    )


def tls_dir(settings: Settings) -> Path:
    """The stack's CA and server certificate (clients: ``<this>/ca.pem``)."""
    return stack_dir(settings) / "kafka-tls"


def _broker_password(settings: Settings) -> str:
    path = tls_dir(settings) / "broker-password"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24), encoding="utf-8")
        os.chmod(path, 0o600)
    return path.read_text(encoding="utf-8").strip()


def format_storage(
    settings: Settings,
    java: str,
    lib: Path,
    log4j: Path,
    node: KafkaNode,
    nodes: list[KafkaNode],
    progress: Progress,
) -> None:
    """Format a node's log dir once, with the cluster's id and SCRAM users (SASL_SSL)."""
    layout = node.layout
    progress(f"{layout.name}: formatting storage in {layout.data}")
    started = time.monotonic()
    command = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{lib}/*",
        "kafka.tools.StorageTool",
        "format",
        *(["--standalone"] if len(nodes) == 1 else []),
        "-t",
        _cluster_id(settings),
        "-c",
        str(layout.config),
        "--ignore-formatted",
    ]
    for user, password in _scram_users(settings):
        for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            command += ["--add-scram", f'{mechanism}=[name={user},password="{password}"]']
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise OperationalError(
            f"{layout.name}: formatting {layout.data} failed (exit {result.returncode}):\n"
            f"{tail_text(result.stdout + result.stderr, 20)}"
        )
    progress(f"{layout.name}: storage formatted in {time.monotonic() - started:.1f} s")


def _scram_users(settings: Settings) -> list[tuple[str, str]]:
    if _listener(settings) == "PLAINTEXT":
        return []
    user = settings.kafka_sasl_username
    password = settings.kafka_sasl_password.get_secret_value()
    if not user or not password:
        raise OperationalError(
            "HALLSTATS_KAFKA_SASL_USERNAME and HALLSTATS_KAFKA_SASL_PASSWORD: the stack "
            "creates this user on a SASL_SSL cluster; expected both set, got an empty one"
        )
    if '"' in password or "\\" in password:
        raise OperationalError(
            'HALLSTATS_KAFKA_SASL_PASSWORD: the stack cannot pass a password holding " or \\ '
            "to kafka-storage; choose another"
        )
    return [(BROKER_USER, _broker_password(settings)), (user, password)]


def _cluster_id(settings: Settings) -> str:
    """One id for every node of the stack, kept beside node 1's folder."""
    path = stack_dir(settings) / "kafka-cluster.id"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    while True:  # as Kafka's Uuid.randomUuid makes it (url-safe base64, no '-' first)
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def template(name: str) -> Template:
    return Template((_TEMPLATES / name).read_text(encoding="utf-8"))
