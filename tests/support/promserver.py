"""A real Prometheus (Debian's package) for the tests, on loopback only.

One server per session (``prometheus`` fixture, registered in conftest). Tests
add their worker as a scrape target with :meth:`PrometheusServer.watch`: file
service discovery picks the file up within a second, and the ``test`` label
keeps each test's series apart. It also loads the project's alert rules, so
the real server evaluates every rule expression.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "hallstats.rules.yml"


class PrometheusServer:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.targets = workdir / "targets"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "prometheus not found: install Debian's package (make system, or "
                "apt-get install prometheus)",
                pytrace=False,
            )
        self.targets.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "hallstats",
                            "file_sd_configs": [
                                {"files": [str(self.targets / "*.json")], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                },
                indent=2,
            )
        )
        log = (self.workdir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"prometheus exited: {self.log_tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def watch(self, name: str, targets: list[str], labels: dict[str, str]) -> None:
        """Scrape ``targets`` (host:port) every second, adding ``labels`` to their series."""
        body = json.dumps([{"targets": targets, "labels": labels}])
        tmp = self.targets / f".{name}.tmp"
        tmp.write_text(body)
        tmp.rename(self.targets / f"{name}.json")

    def unwatch(self, name: str) -> None:
        (self.targets / f"{name}.json").unlink(missing_ok=True)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an HTTP API path; returns the JSON body even for errors (status 'error')."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr)

    def scalar(self, expr: str) -> float | None:
        """The value of a query that yields one sample, None when it yields none."""
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return float(result[1])
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def wait_for(
        self, expr: str, check: Callable[[float | None], bool], timeout: float = 60
    ) -> float | None:
        deadline = time.monotonic() + timeout
        value = self.scalar(expr)
        while not check(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} = {value} after {timeout:.0f} s")
            time.sleep(0.5)
            value = self.scalar(expr)
        return value


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Debian's Prometheus on 127.0.0.1, scraping what tests ``watch``; stopped at the end."""
    from tests.support.services import free_port

    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- PromQL helpers for the dashboard and rules checks ------------------------------------

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions,
    keywords, label names or durations (good enough for our own expressions)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 5m after offset
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or aggregation
            continue
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${hall}": ".*",
    "$hall": ".*",
}


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by plausible values."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every label_values() variable."""
    found = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", grafana_to_promql(target["expr"])))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\)\s*", text)
        if match:
            found.append((f"variable {variable['name']!r}", grafana_to_promql(match.group(1))))
    return found
