"""A three-node Kafka cluster speaking SASL_SSL, as deploy/ documents for production.

The cluster runs from the same templates ``hallstats stack up --brokers 3`` uses
(deploy/kafka/server.properties + sasl-ssl.properties), with certificates from a
CA made for the test and a SCRAM user. Every client connects through TLS and SCRAM:
the terminals' producer, the intake, the counting stage (Faust's aiokafka), finalize.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from pydantic import SecretStr

from deploy import stack as local_stack
from deploy.kafka_config import as_node_user, ensure_client_user, grant, kafka_nodes, tls_dir
from hallstats.errors import OperationalError
from hallstats.kafka import connect_admin, ensure_topics, producer_config
from hallstats.settings import Settings
from tests.support.faults import (
    Emitter,
    assert_exact,
    counted,
    make_events,
    on_services_of,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]

PASSWORD = "Kafka-pw-7f3a9c-known"  # grepped for in every log below


@pytest.fixture(scope="module")
def cluster(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("cluster")
    base = stack.model_copy(
        update={
            "stack_dir": root,
            "kafka_bootstrap": "127.0.0.1:29292,127.0.0.1:29294,127.0.0.1:29296",
            "stack_kafka_brokers": 3,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_ca_file": tls_dir(stack.model_copy(update={"stack_dir": root})) / "ca.pem",
            "kafka_sasl_username": "hallstats-worker",
            "kafka_sasl_password": SecretStr(PASSWORD),
        }
    )
    try:
        local_stack.start_kafka(base, progress=lambda m: print(f"cluster: {m}", file=sys.stderr))
    except Exception:
        local_stack.stop_kafka(base, progress=lambda m: None, graceful=False)
        raise
    yield base
    local_stack.stop_kafka(base, progress=lambda m: None, graceful=False)


@pytest.fixture
def on_cluster(cluster: Settings, isolated: Settings) -> Settings:
    """``isolated``'s names (topics, group, database) on the secured cluster, with the
    ACLs that let the SCRAM user use them (and nothing else)."""
    names = (
        "stack_dir",
        "kafka_bootstrap",
        "stack_kafka_brokers",
        "kafka_security_protocol",
        "kafka_ssl_ca_file",
        "kafka_sasl_username",
        "kafka_sasl_password",
    )
    ensure_client_user(isolated.model_copy(update={n: getattr(cluster, n) for n in names}))
    return on_services_of(isolated, cluster, *names)


def partitions_of(settings: Settings) -> dict[tuple[str, int], tuple[int, list[int]]]:
    """(topic, partition) -> (leader, in-sync replicas) for this test's topics."""
    _admin, metadata = connect_admin(settings)
    return {
        (name, p): (meta.leader, list(meta.isrs))
        for name, topic in metadata.topics.items()
        if name.startswith(settings.app_id)
        for p, meta in topic.partitions.items()
    }


def test_topics_have_three_replicas_and_two_in_sync(on_cluster: Settings) -> None:
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin, metadata = connect_admin(on_cluster)
    topic = metadata.topics[on_cluster.topic]
    assert all(len(p.replicas) == 3 for p in topic.partitions.values())
    resource = ConfigResource(ResourceType.TOPIC, on_cluster.topic)
    seen: list[str] = []

    def described() -> bool:  # every broker learns of a new topic within moments
        try:
            config = admin.describe_configs([resource])[resource].result()
        except KafkaException:
            return False
        seen.append(config["min.insync.replicas"].value)
        return True

    wait_for(described, 30, f"the brokers to describe {on_cluster.topic}")
    assert seen == ["2"]


def test_the_broker_leading_most_partitions_killed_and_back(
    on_cluster: Settings,
    supervised: Callable[[Settings], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    settings = on_cluster
    events = make_events(12_000, seed=11)
    emitter = Emitter(settings, events, rate=500)  # ~24 s of steady traffic
    supervised(settings)
    emitter.start()
    wait_for(lambda: counted(settings) > 500, 180, "the worker to count part of the stream")
    assert emitter.is_alive(), "the broker must die while terminals still send"
    leaders = Counter(leader for leader, _isr in partitions_of(settings).values())
    victim = leaders.most_common(1)[0][0]
    print(f"partition leaders {dict(leaders)}; SIGKILL node {victim}")
    local_stack.stop_kafka(settings, progress=lambda m: None, graceful=False, node=victim)
    time.sleep(15)  # leadership moves; terminals and the worker go on with two brokers
    local_stack.start_kafka(settings, progress=lambda m: None, node=victim)
    emitter.join(240)
    assert not emitter.failures
    assert_exact(settings, events)

    def caught_up() -> bool:
        return all(victim in isr for _leader, isr in partitions_of(settings).values())

    wait_for(caught_up, 120, f"node {victim} to be in sync again on every partition")
    logs = [*tmp_path.glob("worker-*.log")]
    for node in kafka_nodes(settings):
        logs += [path for path in node.layout.logs if path.exists()]
    leaked = [str(path) for path in logs if PASSWORD in path.read_text(errors="replace")]
    assert not leaked, f"the Kafka password appears in {leaked}"


def test_a_wrong_password_fails_fast_and_names_the_setting(on_cluster: Settings) -> None:
    wrong = "Wrong-pw-0451-known"
    env = {
        **on_cluster.as_env(),
        "HALLSTATS_KAFKA_SASL_PASSWORD": wrong,
        "PATH": "/usr/bin:/bin",
    }
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "hallstats.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0
    assert time.monotonic() - started < 60
    output = run.stdout + run.stderr
    assert "HALLSTATS_KAFKA_SASL_PASSWORD" in output, output[-2000:]
    assert wrong not in output and PASSWORD not in output


def test_the_user_reaches_its_own_topics_and_nothing_else(on_cluster: Settings) -> None:
    """Least privilege: ACLs grant the SCRAM user hallstats' topics and groups only."""
    elsewhere = f"elsewhere-{on_cluster.app_id}"
    ensure_topics(
        as_node_user(on_cluster).model_copy(update={"topic": elsewhere}), [(elsewhere, 1)]
    )
    producer = Producer(producer_config(on_cluster, message_timeout_ms=10_000))
    failures: list[str] = []
    producer.produce(
        elsewhere, b"x", on_delivery=lambda err, _msg: failures.append(str(err)) if err else None
    )
    producer.flush(20)
    assert failures and "authoriz" in failures[0].lower(), failures
    admin, _metadata = connect_admin(on_cluster)
    with pytest.raises(OperationalError, match="AUTHORIZATION_FAILED"):
        grant(admin, on_cluster.model_copy(update={"app_id": "anything", "topic": "anything"}))
