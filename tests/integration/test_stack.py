"""The local stack's life cycle, on its own ports and folder so the developer's stack is untouched.

Integration tests run in file order against one module-scoped stack: up, check, use, down.
The unit tests at the end need no server: they check the error messages and the generated
ClickHouse config.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from deploy import stack
from hallstats.errors import OperationalError
from hallstats.settings import Settings

integration = pytest.mark.integration
# Generous: a cold start (jar download, first format) takes ~10 s here, more on a busy CI.
within = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A second stack next to the default one: other ports, a throw-away stack_dir."""
    test_settings = Settings(
        stack_dir=tmp_path_factory.mktemp("stack"),
        kafka_bootstrap="127.0.0.1:19092",
        clickhouse_port=19000,
        clickhouse_http_port=18123,
        clickhouse_database="hallstats_stack_test",
        topic="stack-test-events",
        dlq_topic="stack-test-events-dlq",
        partitions=2,
    )
    messages: list[str] = []
    stack.up(test_settings, progress=messages.append)
    try:
        yield test_settings
    finally:
        stack.down(test_settings, progress=messages.append)


@integration
@within
def test_status_reports_both_running(settings: Settings) -> None:
    statuses = {s.name: s for s in stack.status(settings)}
    assert set(statuses) == {"kafka", "clickhouse"}
    assert statuses["kafka"].running, statuses["kafka"]
    assert statuses["kafka"].address == "127.0.0.1:19092"
    assert statuses["clickhouse"].running, statuses["clickhouse"]
    assert statuses["clickhouse"].address.startswith("127.0.0.1:19000")
    assert "18." in statuses["clickhouse"].detail or "ClickHouse" in statuses["clickhouse"].detail


@integration
@within
def test_up_again_is_a_no_op(settings: Settings) -> None:
    root = Path(settings.stack_dir)
    pids_before = {p.name: p.read_text() for p in root.glob("*/*.pid")}
    assert len(pids_before) == 2
    messages: list[str] = []
    started = time.monotonic()
    stack.up(settings, progress=messages.append)
    assert time.monotonic() - started < 10
    assert all("already running" in m for m in messages), messages
    assert {p.name: p.read_text() for p in root.glob("*/*.pid")} == pids_before


@integration
@within
def test_kafka_round_trip(settings: Settings) -> None:
    key = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topic, key=key.encode(), value=b"hello")
    assert producer.flush(15) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"stack-test-{key}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([settings.topic])
        deadline = time.monotonic() + 45
        got = None
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None and msg.key() == key.encode():
                got = msg.value()
        assert got == b"hello"
    finally:
        consumer.close()


@integration
@within
def test_topics_created_with_partitions(settings: Settings) -> None:
    topics = (
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10).topics
    )
    assert len(topics[settings.topic].partitions) == settings.partitions
    assert len(topics[settings.dlq_topic].partitions) == 1


@integration
@within
def test_clickhouse_query(settings: Settings) -> None:
    client = Client("127.0.0.1", settings.clickhouse_port)
    try:
        assert client.execute("SELECT 1 + 1") == [(2,)]
        databases = {row[0] for row in client.execute("SHOW DATABASES")}
        assert settings.clickhouse_database in databases
    finally:
        client.disconnect()


@integration
@within
def test_down_stops_everything(settings: Settings) -> None:
    stack.down(settings, progress=lambda _m: None)
    statuses = stack.status(settings)
    assert [s.running for s in statuses] == [False, False], statuses
    assert not list(Path(settings.stack_dir).glob("*/*.pid"))
    stack.down(settings, progress=lambda _m: None)  # already stopped: fine


# --------------------------------------------------------------------------- no servers needed


def _offline_settings(tmp_path: Path) -> Settings:
    return Settings(
        stack_dir=tmp_path / "stack",
        cache_dir=tmp_path / "cache",
        kafka_bootstrap="127.0.0.1:19192",
        clickhouse_port=19100,
        clickhouse_http_port=18223,
    )


def test_missing_clickhouse_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(os, "access", lambda *_args: False)
    with pytest.raises(OperationalError, match="apt-get install -y clickhouse-server"):
        stack.up(_offline_settings(tmp_path))


def test_missing_java_fails_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "java" else real_which(name))
    settings = _offline_settings(tmp_path)
    with pytest.raises(OperationalError, match="openjdk-17-jre-headless"):
        stack.up(settings)
    assert not (tmp_path / "stack").exists()


def test_missing_maven_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "mvn" else real_which(name))
    if real_which("java") is None:
        pytest.skip("java is not installed")
    with pytest.raises(OperationalError, match="apt-get install -y maven"):
        stack.start_kafka(_offline_settings(tmp_path))


def test_non_loopback_addresses_are_refused(tmp_path: Path) -> None:
    settings = _offline_settings(tmp_path).model_copy(update={"kafka_bootstrap": "10.1.2.3:9092"})
    with pytest.raises(OperationalError, match=r"only serves 127\.0\.0\.1"):
        stack.kafka_ports(settings)


def test_kafka_ports_derive_controller_port() -> None:
    assert stack.kafka_ports(Settings(kafka_bootstrap="127.0.0.1:9092")) == (9092, 9093)


@pytest.mark.skipif(
    not Path("/etc/clickhouse-server/config.xml").is_file(),
    reason="clickhouse-server not installed",
)
def test_clickhouse_config_points_into_the_stack(tmp_path: Path) -> None:
    settings = _offline_settings(tmp_path)
    layout = stack._clickhouse_layout(settings)
    stack._write_clickhouse_config(settings, layout)
    root = ET.parse(layout.config).getroot()
    assert [e.text for e in root.findall("listen_host")] == ["127.0.0.1"]
    assert root.findtext("tcp_port") == "19100"
    assert root.findtext("http_port") == "18223"
    assert root.find("interserver_http_port") is None
    for tag in ("path", "tmp_path", "user_files_path", "format_schema_path", "users_config"):
        assert str(root.findtext(tag)).startswith(str(tmp_path)), tag
    for tag in ("logger/log", "logger/errorlog"):
        assert str(root.findtext(tag)).startswith(str(tmp_path)), tag
    users = ET.parse(layout.root / "users.xml").getroot()
    nets = {e.text for e in users.iterfind("users/default/networks/ip")}
    assert nets == {"127.0.0.1", "::1"}
