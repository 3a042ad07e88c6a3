"""The local stack's Kafka nodes: which ports and folders, their config and storage.

One node by default; ``HALLSTATS_STACK_KAFKA_BROKERS=3`` (or ``stack up --brokers 3``)
makes a three-node KRaft cluster whose controller quorum has three voters. Node ``i``
takes the ``i``-th entry of ``HALLSTATS_KAFKA_BOOTSTRAP`` as its broker port, or the
first port plus ``2(i-1)`` when the list is shorter; its controller port is one above.
With ``HALLSTATS_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` the nodes speak TLS (certificates
from :mod:`deploy.tls`) and SCRAM; the client user of the settings is created through
the admin API once the nodes run.
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

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, not re-exported
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from confluent_kafka.cimpl import NewTopic
from pydantic import SecretStr

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
from hallstats.kafka import connect_admin
from hallstats.settings import Settings

_TEMPLATES = Path(__file__).resolve().parent / "kafka"
BROKER_USER = "broker"  # the nodes' own SCRAM user, for replication between them
NODE_CERT_PRINCIPAL = "CN=127.0.0.1"  # the nodes' certificate subject (deploy/tls.py)


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    layout: Layout


def replication_factor(brokers: int) -> int:
    """Three copies of every partition when the cluster has three brokers or more."""
    return max(1, min(3, brokers))


def min_insync_replicas(replicas: int) -> int:
    """With three copies, an acknowledged write is on two brokers: one may die."""
    return 2 if replicas >= 3 else 1


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
            # Secured: the controllers speak TLS with client certificates (SCRAM users
            # live in the metadata the controllers serve, so they cannot log in there).
            controller_protocol="PLAINTEXT" if _listener(settings) == "PLAINTEXT" else "SSL",
            host=LOOPBACK,
            broker_port=node.broker_port,
            controller_port=node.controller_port,
            log_dirs=layout.data,
            partitions=settings.partitions,
            replicas=replicas,
            min_isr=min_insync_replicas(replicas),
            security=_security_block(settings),
        ),
        mode=0o600,  # it may hold the broker's password
    )
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
        super_users=f"User:{BROKER_USER};User:{NODE_CERT_PRINCIPAL}",
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
    secret = ""
    if _listener(settings) != "PLAINTEXT":
        # Only the nodes' own user is made here (their logins between each other need
        # it before anything runs); clients' users come through the admin API after
        # the start (ensure_client_user), never on a command line.
        secret = _broker_password(settings)
        for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            command += ["--add-scram", f'{mechanism}=[name={BROKER_USER},password="{secret}"]']
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        output = tail_text(result.stdout + result.stderr, 20)
        raise OperationalError(
            f"{layout.name}: formatting {layout.data} failed (exit {result.returncode}):\n"
            + (output.replace(secret, "***") if secret else output)
        )
    progress(f"{layout.name}: storage formatted in {time.monotonic() - started:.1f} s")


def as_node_user(settings: Settings) -> Settings:
    """The settings logged in as the nodes' own SCRAM user: what the stack's probes and
    admin calls use, since the client user exists only once the stack made it."""
    if _listener(settings) == "PLAINTEXT":
        return settings
    return settings.model_copy(
        update={
            "kafka_sasl_username": BROKER_USER,
            "kafka_sasl_password": SecretStr(_broker_password(settings)),
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
        }
    )


def ensure_client_user(settings: Settings) -> None:
    """Create or update the SCRAM user of the settings (a secured stack), logged in as
    the nodes' own user: upserts are idempotent, so every start makes it hold."""
    if _listener(settings) == "PLAINTEXT":
        return
    user = settings.kafka_sasl_username
    password = settings.kafka_sasl_password.get_secret_value()
    if not user or not password:
        raise OperationalError(
            "HALLSTATS_KAFKA_SASL_USERNAME and HALLSTATS_KAFKA_SASL_PASSWORD: the stack "
            "creates this user on a SASL_SSL cluster; expected both set, got an empty one"
        )
    admin, _metadata = connect_admin(as_node_user(settings))
    for mechanism in (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256):
        upsert: list[UserScramCredentialAlteration] = [  # one per request, says the broker
            UserScramCredentialUpsertion(
                user, ScramCredentialInfo(mechanism, 8192), password.encode()
            )
        ]
        for future in admin.alter_user_scram_credentials(upsert).values():
            try:
                future.result(timeout=30)
            except KafkaException as exc:
                raise OperationalError(
                    f"kafka: creating SCRAM user {user!r} failed: {exc}"
                ) from exc
    grant(admin, settings)


#: What a hallstats user may do on its own topics (prefixed by the app id or the raw
#: topic, which also prefixes the DLQ) and consumer groups (prefixed by the app id).
_TOPIC_OPERATIONS = (
    AclOperation.READ,
    AclOperation.WRITE,
    AclOperation.CREATE,
    AclOperation.DESCRIBE,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
)
_GROUP_OPERATIONS = (AclOperation.READ, AclOperation.DESCRIBE)


def grant(admin: AdminClient, settings: Settings) -> None:
    """The ACLs of the settings' SASL user: its topics and groups, nothing else
    (creating ACLs is idempotent). Called with an admin logged in as a node."""
    principal = f"User:{settings.kafka_sasl_username}"
    bindings = [
        AclBinding(
            ResourceType.TOPIC,
            prefix,
            ResourcePatternType.PREFIXED,
            principal,
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for prefix in sorted({settings.app_id, settings.topic})
        for operation in _TOPIC_OPERATIONS
    ] + [
        AclBinding(
            ResourceType.GROUP,
            settings.app_id,
            ResourcePatternType.PREFIXED,
            principal,
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for operation in _GROUP_OPERATIONS
    ]
    bindings.append(  # metadata and idempotent producers
        AclBinding(
            ResourceType.BROKER,  # librdkafka's name for Kafka's CLUSTER resource
            "kafka-cluster",
            ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation.IDEMPOTENT_WRITE,
            AclPermissionType.ALLOW,
        )
    )
    for binding, future in admin.create_acls(bindings, request_timeout=30).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise OperationalError(f"kafka: granting {binding} failed: {exc}") from exc
    _wait_for_grants(settings)


def _wait_for_grants(settings: Settings, timeout: float = 30.0) -> None:
    """Credentials and ACLs reach the brokers through the metadata log, moments after
    they are made: wait until the user can log in and may create its topics (checked
    without creating any)."""
    probe = NewTopic(f"{settings.app_id}-acl-probe", num_partitions=1, replication_factor=-1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin, _metadata = connect_admin(settings, timeout=5)
            admin.create_topics([probe], validate_only=True)[probe.topic].result(timeout=10)
            return
        except (KafkaException, OperationalError) as exc:
            error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            if time.monotonic() > deadline:
                raise OperationalError(
                    f"kafka: the ACLs of {settings.kafka_sasl_username!r} did not take effect "
                    f"within {timeout:.0f} s: {exc}"
                ) from exc
            time.sleep(0.5)


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
