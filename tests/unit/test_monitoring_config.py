"""Alert rules (promtool unit tests), scrape config and Grafana files, without services.

The expressions themselves are checked against a real Prometheus and the
worker's real /metrics in tests/integration/test_metrics_prometheus.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promserver import dashboard_expressions

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
ALERTS = {
    "PipelineBehind",
    "DlqRateHigh",
    "NoEventsDuringOfficeHours",
    "TerminalSilent",
    "ClickHouseWritesFailing",
    "WeekNotFinalizedPastDeadline",
}


def promtool(*args: str, cwd: Path = PROM) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: apt-get install prometheus (make system)", pytrace=False)
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "rules/hallstats.rules.yml")
    tests = [str(p.relative_to(PROM)) for p in sorted((PROM / "rules").glob("*.test.yml"))]
    assert len(tests) == 2
    assert promtool("test", "rules", *tests).count("SUCCESS") == len(tests)


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROM / "rules" / "hallstats.rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names >= ALERTS
    tested = {
        case["alertname"]
        for path in (PROM / "rules").glob("*.test.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == names


def test_scrape_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in out


def load_dashboard() -> dict[str, Any]:
    dashboards = list((GRAFANA / "dashboards").glob("*.json"))
    assert len(dashboards) == 1
    body: dict[str, Any] = json.loads(dashboards[0].read_text())
    return body


def test_dashboard_has_the_panels_operations_need() -> None:
    dashboard = load_dashboard()
    text = " ".join(expr for _, expr in dashboard_expressions(dashboard))
    for needle in (
        "rate(hallstats_events_accepted_total",  # live throughput by type
        'period="week"',
        'period="year_to_date"',
        "hallstats_consumer_lag",
        "rate(hallstats_events_rejected_total",  # DLQ
        "hallstats_event_latency_seconds_bucket",
    ):
        assert needle in text, needle
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "hallstats.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    dashboard = load_dashboard()
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used == {source["uid"]}
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "hallstats.yml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
