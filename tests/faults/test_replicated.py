"""Two ClickHouse servers as replicas of one shard (ZooKeeper on loopback), from the
same deploy/clickhouse/cluster.xml production installs: one replica is SIGKILLed
while the worker counts, counting goes on through the other, the killed one comes
back and catches up, and both give the same finalized figures, equal to the oracle.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from consumers import finalized
from deploy import clickhouse as ch_stack
from hallstats.clickhouse import connect, execute
from hallstats.settings import Settings
from schemas.queries import latest_counts
from tests.support.faults import (
    WEEK,
    Emitter,
    assert_exact,
    counted,
    make_events,
    on_services_of,
    wait_for,
)
from tests.support.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]


@pytest.fixture(scope="module")
def replicas(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    first, second = free_port(), free_port()
    base = stack.model_copy(
        update={
            "stack_dir": tmp_path_factory.mktemp("replicas"),
            "clickhouse_port": first,
            "clickhouse_http_port": free_port(),
            "clickhouse_replicas": f"127.0.0.1:{second}:{free_port()}",
            "clickhouse_cluster": "hallstats",
            "stack_zookeeper_port": free_port(),
        }
    )
    try:
        ch_stack.start_clickhouse(base, progress=lambda m: None)
        yield base
    finally:
        ch_stack.stop_clickhouse(base, progress=lambda m: None)


@pytest.fixture
def on_replicas(replicas: Settings, isolated: Settings) -> Settings:
    """``isolated``'s names (topics, group, database) on the two replicas."""
    return on_services_of(
        isolated,
        replicas,
        "stack_dir",
        "clickhouse_port",
        "clickhouse_http_port",
        "clickhouse_replicas",
        "clickhouse_cluster",
        "stack_zookeeper_port",
    )


def on_replica(settings: Settings, index: int) -> dict[str, object]:
    """What replica ``index`` alone holds: archive, finalized versions, live counters."""
    alone = ch_stack.replica_settings(settings, index)
    client = connect(alone)
    try:
        db = settings.clickhouse_database
        ((archived,),) = execute(
            client, f"SELECT uniqExact(event_id) FROM {db}.events", settings=alone
        )
        versions = [
            (s.version, s.weekly, s.year_to_date, s.content_hash)
            for s in finalized.versions(client, alone, WEEK)
        ]
        live = latest_counts(
            client,
            alone,
            by=("event_type",),
            where="period_kind = 'week' AND period = %(w)s",
            params={"w": str(WEEK)},
        )
        return {"archived": int(archived), "versions": versions, "live": sorted(live)}
    finally:
        client.disconnect()


def archived_on(settings: Settings, index: int) -> int:
    alone = ch_stack.replica_settings(settings, index)
    client = connect(alone)
    try:
        db = settings.clickhouse_database
        return int(execute(client, f"SELECT count() FROM {db}.events", settings=alone)[0][0])
    finally:
        client.disconnect()


def test_a_replica_killed_mid_stream_and_back(
    on_replicas: Settings, supervised: Callable[[Settings], list[subprocess.Popen[bytes]]]
) -> None:
    settings = on_replicas
    events = make_events(10_000, seed=21)
    emitter = Emitter(settings, events, rate=400)  # ~25 s of steady traffic
    supervised(settings)
    emitter.start()
    wait_for(lambda: counted(settings) > 500, 180, "the worker to count part of the stream")
    assert emitter.is_alive(), "the replica must die while terminals still send"
    ch_stack.stop_clickhouse(settings, progress=lambda m: None, replica=1, graceful=False)
    during = archived_on(settings, 1)  # replica 2 alone, and an error is an error
    wait_for(
        lambda: archived_on(settings, 1) > during + 500, 120, "counting to go on through replica 2"
    )
    ch_stack.start_clickhouse(settings, progress=lambda m: None, replica=1)
    emitter.join(240)
    assert not emitter.failures
    assert_exact(settings, events)

    def same_on_both() -> bool:
        return on_replica(settings, 0) == on_replica(settings, 1)

    wait_for(same_on_both, 120, "replica 1 to catch up with replica 2")
    first = on_replica(settings, 0)
    assert first["archived"] == len({e["event_id"] for e in events})
    print(f"replicas agree: {first['archived']} events, versions {len(first['versions'])}")
