"""A real Prometheus scraping a real worker while events flow (issue 4).

One worker for the module (its own topics, group, database and metrics port),
scraped every second by the session's Prometheus under the label
``test=<uid>``. Every assertion about metric values goes through
Prometheus's HTTP API, so it also proves the exposition is scrapeable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from tests.support.promserver import PrometheusServer, dashboard_expressions, metric_names
from tests.support.services import free_port, settings_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAVES = 8
W50 = IsoWeek.parse("2024-W50")
# Series Prometheus itself attaches to every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def event(kind: str, when: datetime, hall: str, window: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "occurred_at": when.isoformat(),
        "hall_id": hall,
        "window_id": window,
        "department": "民政厅",
    }


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


@dataclass
class Plan:
    """The messages to send in waves, and what the metrics must end up saying."""

    waves: list[list[bytes]] = field(default_factory=list)
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> event
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0

    @classmethod
    def build(cls, now: datetime) -> Plan:
        plan = cls()
        recent = now - timedelta(seconds=90)
        kinds = ("consult", "accept", "issue", "transfer")
        for w in range(WAVES):
            wave = [
                event(kinds[i % 4], recent, ("hall-a", "hall-b")[i % 2], f"W0{1 + i % 4}")
                for i in range(12)
            ]
            if w == 0:
                # A window last heard from 2 hours ago: silent (threshold 1 h) ...
                wave.append(event("accept", now - timedelta(hours=2), "hall-b", "W09"))
                # ... and one whose last event is as old but which still sends heartbeats.
                wave.append(event("consult", now - timedelta(hours=3), "hall-a", "W08"))
                wave += [
                    event("issue", datetime(2024, 12, 10, 10, tzinfo=UTC), "hall-a", "W01"),
                    event("consult", datetime(2024, 12, 11, 10, tzinfo=UTC), "hall-a", "W02"),
                ]
            plan.valid.update((e["event_id"], e) for e in wave)
            raw = [encode(e) for e in wave]
            if w == 1:  # liveness only: never counted
                raw.append(encode(event("heartbeat", recent, "hall-a", "W08")))
            if w == 2:  # re-sends of wave 0
                raw += plan.waves[0][:3]
                plan.duplicates += 3
            if w == 3:
                raw += [
                    b'{"schema_version": 1,',
                    encode({k: v for k, v in wave[0].items() if k != "hall_id"}),
                    encode({**wave[1], "event_id": str(uuid.uuid4()), "event_type": "approve"}),
                ]
                plan.rejected.update(["invalid_json", "missing_field", "unknown_event_type"])
            if w == 4:  # same id as a wave 1 event, other content
                first = next(iter(json.loads(m) for m in plan.waves[1]))
                raw.append(encode({**first, "window_id": "W99"}))
                plan.rejected["conflicting_duplicate"] += 1
            if w == 5:
                raw.append(b"not json")
                plan.rejected["invalid_json"] += 1
            plan.waves.append(raw)
        return plan

    def counted_in(self, period: str, now: datetime, settings: Settings) -> int:
        today = now.astimezone(settings.zone).date()
        n = 0
        for e in self.valid.values():
            day = datetime.fromisoformat(e["occurred_at"]).astimezone(settings.zone).date()
            n += {
                "today": day == today,
                "week": IsoWeek.of(day) == IsoWeek.of(today),
                "year_to_date": day.year == today.year,
            }[period]
        return n


@dataclass
class Live:
    settings: Settings
    uid: str
    plan: Plan
    sender: threading.Thread
    prom: PrometheusServer

    def q(self, expr: str) -> str:
        """``expr`` with this test's selector: NAME -> NAME{test="uid",...}."""
        return expr.replace("{", f'{{test="{self.uid}",').replace(",}", "}")

    def settled(self) -> None:
        """Everything sent and counted, as Prometheus sees it."""
        self.sender.join(60)
        assert not self.sender.is_alive()
        self.prom.wait_for(
            self.q("sum(hallstats_events_accepted_total{})"),
            lambda v: v == len(self.plan.valid),
            timeout=90,
        )


def send_waves(settings: Settings, waves: list[list[bytes]], pause: float) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for wave in waves:
        for value in wave:
            producer.produce(settings.topic, value=value)
        assert producer.flush(30) == 0
        time.sleep(pause)


@pytest.fixture(scope="module")
def live(
    stack: Settings, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    from hallstats.cli.demo import start_worker, stop_worker
    from hallstats.kafka import ensure_topics

    workdir = tmp_path_factory.mktemp("metrics-worker")
    settings = stack.isolated(
        "hs",
        workdir,
        worker_web_port=free_port(),
        metrics_port=free_port(),
        metrics_refresh_seconds=1.0,
        worker_batch_seconds=0.2,
    )
    ensure_topics(settings, [(settings.topic, settings.partitions), (settings.dlq_topic, 1)])
    uid = settings.app_id
    prometheus.watch(uid, [f"127.0.0.1:{settings.metrics_port}"], {"test": uid})
    log = workdir / "worker.log"
    proc = start_worker(settings, log, env=settings_env(settings))
    try:
        # Send only once Prometheus scrapes the worker, so it sees the events flow.
        prometheus.wait_for(f'up{{test="{uid}"}}', lambda v: v == 1, timeout=90)
        plan = Plan.build(datetime.now(UTC))
        sender = threading.Thread(target=send_waves, args=(settings, plan.waves, 1.0))
        sender.start()
        yield Live(settings, uid, plan, sender, prometheus)
        sender.join(60)
    finally:
        prometheus.unwatch(uid)
        crashed = proc.poll() not in (None, 0, -15)
        stop_worker(proc)
        if crashed:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")


def test_prometheus_sees_events_flow_and_counters_equal_the_events_sent(live: Live) -> None:
    prom, plan, q = live.prom, live.plan, live.q
    rate = q("sum(rate(hallstats_events_accepted_total{}[10s]))")
    deadline = time.monotonic() + 60
    flowing = None
    while flowing is None and time.monotonic() < deadline:
        value = prom.scalar(rate)
        if value:
            flowing = (value, live.sender.is_alive())
        time.sleep(0.5)
    assert flowing is not None and flowing[0] > 0
    assert flowing[1], "rate() only turned positive after the last wave was sent"
    live.settled()

    assert prom.scalar(q("sum(hallstats_events_accepted_total{})")) == len(plan.valid)
    assert prom.scalar(q("sum(hallstats_duplicates_dropped_total{})")) == plan.duplicates
    assert prom.scalar(q("sum(hallstats_events_rejected_total{})")) == plan.rejected.total()
    by_reason = prom.query(q("hallstats_events_rejected_total{} > 0"))["data"]["result"]
    assert {r["metric"]["reason"]: float(r["value"][1]) for r in by_reason} == plan.rejected
    kinds = prom.query(q("sum by (type) (hallstats_events_accepted_total{})"))["data"]["result"]
    expected_kinds = Counter(e["event_type"] for e in plan.valid.values())
    assert {r["metric"]["type"]: float(r["value"][1]) for r in kinds} == expected_kinds
    assert prom.scalar(
        q('sum(hallstats_event_latency_seconds_count{source="kafka_timestamp"})')
    ) == len(plan.valid)

    # Gauges recomputed from ClickHouse and Kafka every second.
    now = datetime.now(UTC)
    for period in ("today", "week", "year_to_date"):
        expected = plan.counted_in(period, now, live.settings)
        prom.wait_for(
            q(f'sum(hallstats_period_events{{period="{period}"}})'),
            lambda v, n=expected: v == n,
            timeout=30,
        )
    prom.wait_for(q('hallstats_terminals_silent{hall="hall-b"}'), lambda v: v == 1, timeout=30)
    assert prom.scalar(q('hallstats_terminals_silent{hall="hall-a"}')) == 0
    prom.wait_for(q("max(hallstats_consumer_lag{})"), lambda v: v == 0, timeout=30)
    assert (prom.scalar(q("sum(hallstats_clickhouse_write_seconds_count{})")) or 0) > 0
    assert (prom.scalar(q("faust_messages_received_total{}")) or 0) > 0


def worker_metrics(live: Live, port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def test_dashboard_and_rule_expressions_are_valid_and_use_exposed_metrics(live: Live) -> None:
    live.settled()
    live.prom.wait_for(live.q("count(hallstats_terminals_silent{})"), bool)
    exposition = worker_metrics(live, live.settings.metrics_port)
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/hallstats.json").read_text())
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/hallstats.rules.yml").read_text())
    expressions = dashboard_expressions(dashboard) + [
        (f"rule {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]
    ]
    assert len(expressions) > 20
    problems = []
    for where, expr in expressions:
        body = live.prom.query(expr)
        if body["status"] != "success":
            problems.append(f"{where}: {body.get('error')}: {expr}")
        unknown = metric_names(expr) - exposed - SYNTHETIC
        if unknown:
            problems.append(f"{where}: metrics the worker does not expose: {sorted(unknown)}")
    assert not problems, "\n".join(problems)

    # The real server loaded the rules and evaluates every one without error.
    deadline = time.monotonic() + 30
    while True:
        loaded = live.prom.api("/api/v1/rules")["data"]["groups"]
        health = {r["name"]: r["health"] for g in loaded for r in g["rules"]}
        if set(health.values()) == {"ok"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(health) == 7 and set(health.values()) == {"ok"}, health


def test_metrics_served_on_both_ports_and_follow_naming_conventions(live: Live) -> None:
    live.settled()
    ours = worker_metrics(live, live.settings.metrics_port)
    faust_web = worker_metrics(live, live.settings.worker_web_port)
    for text in (ours, faust_web):
        assert "hallstats_events_accepted_total{" in text
        assert "faust_messages_received_total " in text
    assert "event_id" not in ours and "window_id" not in ours
    assert "_created" not in ours
    promtool = shutil.which("promtool")
    assert promtool is not None
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=ours, capture_output=True, text=True, check=False
    )
    complaints = [
        line for line in (lint.stdout + lint.stderr).splitlines() if line.startswith("hallstats_")
    ]
    assert not complaints, complaints  # Faust's own names are not ours to fix


def test_an_event_for_a_finalized_week_counts_as_late(live: Live) -> None:
    from consumers.finalize import finalize

    live.settled()
    prom, q = live.prom, live.q
    late_before = prom.scalar(q("sum(hallstats_late_events_total{})")) or 0
    finalize(live.settings, W50, timeout=60)
    prom.wait_for(
        q("hallstats_last_finalized_week_timestamp_seconds{}"),
        lambda v: v == W50.closes_at(live.settings.zone).timestamp(),
        timeout=30,
    )
    late = event("transfer", datetime(2024, 12, 12, 9, tzinfo=UTC), "hall-a", "W03")
    send_waves(live.settings, [[encode(late)]], 0)
    live.plan.valid[late["event_id"]] = late
    prom.wait_for(q("sum(hallstats_late_events_total{})"), lambda v: v == late_before + 1)
    assert prom.scalar(q('hallstats_late_events_total{type="transfer"}')) == 1


def test_status_once_shows_throughput_lag_weeks_and_silent_terminals(live: Live) -> None:
    live.settled()
    env = {**os.environ, **settings_env(live.settings), "COLUMNS": "200"}

    def status(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hallstats.cli", "status", "--once", "--interval", "1", *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    shown = status()
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for needle in (
        "Throughput",
        "consult",
        "transfer",
        "DLQ",
        live.settings.topic,
        live.settings.by_id_topic,
        str(IsoWeek.of(datetime.now(live.settings.zone).date())),
        "open",
        "hall-b",
        "W09 (2.0 h)",
    ):
        assert needle in text, f"{needle!r} missing from:\n{text}"
    unreachable = status("--url", f"http://127.0.0.1:{free_port()}/metrics")
    assert unreachable.returncode == 3
    assert "cannot scrape" in unreachable.stdout
