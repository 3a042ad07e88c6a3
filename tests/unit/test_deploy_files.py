"""The production files in deploy/: units that systemd can read and that run real
commands, configs that are well-formed once their placeholders are filled.

The configs themselves run for real in the cluster, replica and users tests (the
stack fills the same templates); this catches a broken file without services.
"""

from __future__ import annotations

import configparser
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from string import Template

import pytest

from hallstats.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")  # systemd line continuation
    parser.read_string(text)
    return parser


def test_the_units_cover_broker_worker_gateway_and_api() -> None:
    names = {path.name for path in UNITS}
    assert {
        "kafka@.service",
        "hallstats-worker.service",
        "hallstats-gateway.service",
        "hallstats-api.service",
    } <= names


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_a_unit_restarts_and_runs_a_real_command(path: Path) -> None:
    parsed = unit(path)
    service = parsed["Service"]
    assert service["Restart"] in ("always", "on-failure")
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    command = shlex.split(service["ExecStart"])
    if command[0].endswith("/hallstats"):
        assert service["EnvironmentFile"].startswith("/etc/hallstats/")
        build_parser().parse_args(command[1:])  # exits (fails the test) on a bad command
    else:
        assert "kafka.Kafka" in command and command[-1] == "/etc/kafka/node-%i.properties"


def filled(name: str, **values: object) -> str:
    return Template((ROOT / "deploy" / name).read_text(encoding="utf-8")).substitute(values)


def test_the_clickhouse_files_are_well_formed() -> None:
    cluster = ET.fromstring(
        filled(
            "clickhouse/cluster.xml",
            cluster="hallstats",
            replicas="<replica><host>ch1</host><port>9000</port></replica>",
            zookeeper_host="zk1",
            zookeeper_port=2181,
            replica="r1",
            host="ch1",
            interserver_port=9009,
        )
    )
    assert cluster.find("remote_servers/hallstats/shard/internal_replication") is not None
    assert cluster.find("distributed_ddl/path") is not None
    users = ET.fromstring(
        filled(
            "clickhouse/hallstats-users.xml",
            writer="w",
            writer_sha256="0" * 64,
            reader="r",
            reader_sha256="1" * 64,
            network="10.0.0.0/8",
            database="hallstats",
        )
    )
    assert users.find("users/r/profile").text == "hallstats_reader"  # type: ignore[union-attr]
    assert users.find("profiles/hallstats_reader/readonly").text == "1"  # type: ignore[union-attr]


def test_the_kafka_node_config_is_complete() -> None:
    text = filled(
        "kafka/server.properties",
        node_id=1,
        quorum="controller.quorum.voters=1@k1:9093,2@k2:9093,3@k3:9093",
        listener="SASL_SSL",
        controller_protocol="SSL",
        host="k1",
        broker_port=9092,
        controller_port=9093,
        log_dirs="/var/lib/kafka",
        partitions=4,
        replicas=3,
        min_isr=2,
        security="",
    ) + filled(
        "kafka/sasl-ssl.properties",
        super_users="User:broker;User:CN=k1",
        broker_user="broker",
        broker_password="x",
        keystore="/etc/kafka/node.pem",
        truststore="/etc/kafka/ca.pem",
    )
    props = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert props["min.insync.replicas"] == "2" and props["default.replication.factor"] == "3"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.keystore.type"] == "PEM"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
