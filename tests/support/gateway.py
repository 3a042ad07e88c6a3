"""The real front-desk gateway for tests: started as ``hallstats gateway`` in a child
process on a free loopback port, terminals added through ``hallstats terminals add``,
and what it produced read back from Kafka."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from hallstats.kafka import consumer_config
from hallstats.settings import Settings
from tests.support.events import event
from tests.support.services import ROOT, free_port, settings_env

HALLSTATS = [sys.executable, "-m", "hallstats.cli"]


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    settings: Settings
    verify: ssl.SSLContext | bool = True  # trusts our own certificate when it serves TLS

    def post(
        self,
        token: str | None,
        body: bytes | str,
        content_type: str | None = "application/json",
        **headers: str,
    ) -> httpx.Response:
        sent = dict(headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if content_type is not None:
            sent["Content-Type"] = content_type
        data = body.encode() if isinstance(body, str) else body
        return httpx.post(
            f"{self.url}/v1/events", content=data, headers=sent, timeout=60, verify=self.verify
        )

    def post_json(self, token: str | None, value: object) -> httpx.Response:
        return self.post(token, json.dumps(value, ensure_ascii=False))

    def stop(self) -> None:
        stop_gateway(self.proc)


def start_gateway(
    settings: Settings, log: Path, *, port: int | None = None, timeout: float = 60
) -> Gateway:
    """``hallstats gateway`` with ``settings``, once it answers ``/healthz``."""
    port = port or free_port()
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*HALLSTATS, "gateway", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tls = settings.gateway_tls_cert
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(tls)) if tls else True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"gateway exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200:
                return Gateway(url, proc, log, settings, verify)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_gateway(proc)
    raise AssertionError(f"gateway did not answer /healthz within {timeout} s")


def stop_gateway(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def terminals(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``hallstats terminals ...`` with ``settings``."""
    return subprocess.run(
        [*HALLSTATS, "terminals", *args],
        cwd=ROOT,
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_terminal(settings: Settings, hall: str, window: str) -> str:
    """A new token for ``hall``/``window``: the last line ``terminals add`` prints."""
    done = terminals(settings, "add", "--hall", hall, "--window", window)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def read_topic(settings: Settings, topic: str, *, settle: float = 1.0) -> list[Record]:
    """Every message of ``topic`` from the beginning to its current end (partition
    order; across partitions in no particular order)."""
    consumer = Consumer(
        consumer_config(settings, f"{settings.app_id}-test-reader-{time.time_ns()}")
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(settle)
            if msg is None or msg.error() is not None:
                continue
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            headers = {k: v or b"" for k, v in (msg.headers() or [])}
            records.append(Record(msg.key(), msg.value() or b"", headers))
        assert not ends, f"{topic}: could not read to the end of partitions {sorted(ends)}"
        return records
    finally:
        consumer.close()


HALL_A = {"hall_id": "hall-a", "window_id": "W01"}
HALL_B = {"hall_id": "hall-b", "window_id": "W01"}


def ev(**changes: Any) -> dict[str, Any]:
    return {**event(**HALL_A), **changes}


def cli_terminal(terminal: dict[str, str]) -> dict[str, str]:
    return {"hall": terminal["hall_id"], "window": terminal["window_id"]}
