"""The front-desk HTTP gateway (gateway/) over real HTTP on loopback, against the real
Kafka broker and ClickHouse server.

One gateway (``hallstats gateway`` in a child process) serves the module, on its own
topics and database; tests that need other settings (a low rate, an unreachable
broker) start their own. What the gateway says it accepted is read back from Kafka.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hallstats.settings import Settings
from schemas.dlq import DeadLetter
from schemas.events import parse_event
from schemas.rejections import EventRejected, RejectReason
from tests.support.events import encode
from tests.support.gateway import (
    HALL_B,
    Gateway,
    add_terminal,
    ev,
    read_topic,
    start_gateway,
    terminals,
)
from tests.support.services import free_port

pytestmark = pytest.mark.integration


def _on_topic(settings: Settings, ids: set[str]) -> list[bytes]:
    return [r.value for r in read_topic(settings, settings.topic) if _id(r.value) in ids]


def _id(value: bytes) -> str | None:
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data.get("event_id") if isinstance(data, dict) else None


def _letters(settings: Settings, marker: str) -> list[tuple[DeadLetter, dict[str, bytes]]]:
    found = []
    for record in read_topic(settings, settings.dlq_topic):
        letter = DeadLetter.from_json(json.loads(record.value), -1)
        if letter.original is not None and marker.encode() in letter.original:
            found.append((letter, record.headers))
    return found


# ---------------------------------------------------------------- accepted (202)


def test_accepted_events_reach_the_topic_exactly_as_sent(gw: Gateway, token_a: str) -> None:
    single = ev()
    array = [ev(event_type="consult"), ev(event_type="issue", item_code="MZ-1"), ev()]
    lines = [ev(event_type="transfer"), ev(department="公安厅")]
    array_body = "[\n  " + ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in array) + "\n]"
    ndjson = "".join(json.dumps(e, ensure_ascii=False) + "\r\n\n" for e in lines)

    answers = [
        gw.post_json(token_a, single),
        gw.post(token_a, array_body),
        gw.post(token_a, ndjson, "application/x-ndjson"),
    ]
    for answer, sent in zip(answers, [[single], array, lines], strict=True):
        assert answer.status_code == 202, answer.text
        assert answer.json() == {
            "results": [
                {"index": i, "status": "accepted", "event_id": e["event_id"]}
                for i, e in enumerate(sent)
            ]
        }
    everything = [single, *array, *lines]
    ids = {e["event_id"] for e in everything}
    records = [r for r in read_topic(gw.settings, gw.settings.topic) if _id(r.value) in ids]
    assert sorted(json.loads(r.value)["event_id"] for r in records) == sorted(ids)  # once each
    assert {r.key for r in records} == {b"hall-a/W01"}  # schemas.keys.terminal_key
    expected = {json.dumps(e, ensure_ascii=False).encode() for e in everything}
    assert {r.value for r in records} == expected  # the bytes the terminal sent


def test_resending_the_same_event_is_accepted_again(gw: Gateway, token_a: str) -> None:
    """The worker dedups by event_id, so a re-send after any error is always safe."""
    same = ev()
    for _ in range(2):
        answer = gw.post_json(token_a, same)
        assert answer.status_code == 202, answer.text
    assert len(_on_topic(gw.settings, {same["event_id"]})) == 2


# ---------------------------------------------------------------- rejected (202 / 422)


def test_mixed_request_answers_in_order_and_dead_letters_the_rejected(
    gw: Gateway, token_a: str
) -> None:
    good, naive, other = ev(), ev(occurred_at="2024-12-10T10:00:00"), ev()
    answer = gw.post_json(token_a, [good, naive, other])
    assert answer.status_code == 202, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    rejected = results[1]
    assert rejected["index"] == 1 and rejected["event_id"] == naive["event_id"]
    assert (rejected["reason"], rejected["field"]) == ("naive_timestamp", "occurred_at")
    assert "explicit offset" in rejected["message"]

    on_topic = _on_topic(gw.settings, {good["event_id"], naive["event_id"], other["event_id"]})
    assert sorted(_id(v) or "" for v in on_topic) == sorted([good["event_id"], other["event_id"]])
    letters = _letters(gw.settings, naive["event_id"])
    assert len(letters) == 1
    letter, headers = letters[0]
    assert letter.reason == "naive_timestamp" and letter.field == "occurred_at"
    assert letter.original == json.dumps(naive, ensure_ascii=False).encode()
    assert letter.source_topic == "http:gateway"
    assert letter.key == b"hall-a/W01"
    assert headers["reason"] == b"naive_timestamp"


def _future() -> str:
    return (datetime.now(UTC) + timedelta(hours=2)).isoformat()


# One message per rejection class of the contract (conflicting_duplicate needs the
# counting stage's memory and cannot happen at the door).
BAD: dict[RejectReason, bytes] = {
    RejectReason.OVERSIZE_MESSAGE: encode(ev(case_id="x" * 70_000)),
    RejectReason.INVALID_UTF8: b'{"schema_version": 1, "department": "\xff\xfe"}',
    RejectReason.INVALID_JSON: b'{"schema_version": 1, "event_id": ',
    RejectReason.NOT_AN_OBJECT: b'["hall-a", "W01"]',
    RejectReason.MISSING_FIELD: encode({k: v for k, v in ev().items() if k != "department"}),
    RejectReason.WRONG_TYPE: encode(ev(schema_version="1")),
    RejectReason.UNSUPPORTED_SCHEMA_VERSION: encode(ev(schema_version=2)),
    RejectReason.UNKNOWN_EVENT_TYPE: encode(ev(event_type="complaint")),
    RejectReason.INVALID_VALUE: encode(ev(event_id="not-a-uuid")),
    RejectReason.NAIVE_TIMESTAMP: encode(ev(occurred_at="2024-12-10T10:00:00")),
    RejectReason.INVALID_TIMESTAMP: encode(ev(occurred_at="2024-02-30T10:00:00+08:00")),
    RejectReason.FUTURE_TIMESTAMP: b"",  # made per run: the clock moves
    RejectReason.TIMESTAMP_TOO_OLD: encode(ev(occurred_at="1999-12-31T23:59:59Z")),
}


@pytest.mark.parametrize("reason", list(BAD), ids=lambda r: r.value)
def test_every_reject_reason_answers_422_like_the_worker(
    gw: Gateway, token_a: str, reason: RejectReason
) -> None:
    raw = BAD[reason] or encode(ev(occurred_at=_future()))
    answer = gw.post(token_a, raw + b"\n", "application/x-ndjson")
    assert answer.status_code == 422, answer.text
    (result,) = answer.json()["results"]
    try:  # the worker's own verdict on the same bytes
        parse_event(raw, max_bytes=gw.settings.max_message_bytes, now=datetime.now(UTC))
    except EventRejected as worker:
        verdict = worker.as_dict()
    assert result["status"] == "rejected" and result["index"] == 0
    assert result["reason"] == reason.value == verdict["reason"]
    assert result.get("field") == verdict["field"]
    if reason is not RejectReason.FUTURE_TIMESTAMP:  # its message names the receipt time
        assert result["message"] == verdict["message"]
        assert (result["expected"], result["got"]) == (verdict["expected"], verdict["got"])
    letters = [
        letter
        for letter, _ in _letters(gw.settings, "")
        if letter.original == raw and letter.reason == reason.value
    ]
    assert letters, f"{reason.value}: not in the DLQ with its original bytes"


def test_invalid_single_body_is_one_rejected_event(gw: Gateway, token_a: str) -> None:
    """A body that is not an array is one message, judged as the worker judges one."""
    answer = gw.post(token_a, b'{"schema_version": 1, "event_id": "x"')
    assert answer.status_code == 422, answer.text
    assert answer.json()["results"][0]["reason"] == "invalid_json"
    answer = gw.post(token_a, b"[5, null]")
    assert answer.status_code == 422, answer.text
    assert [r["reason"] for r in answer.json()["results"]] == ["not_an_object"] * 2


# ---------------------------------------------------------------- refused requests


def test_401_for_missing_foreign_unknown_and_revoked_tokens(gw: Gateway, base: Settings) -> None:
    body = ev(hall_id="hall-r", window_id="W09")
    for answer in (
        gw.post_json(None, body),
        gw.post(None, encode(body), Authorization="Basic aGFsbDpwdw=="),
        gw.post(None, encode(body), Authorization="Bearer"),
        gw.post_json("hst_" + "A" * 43, body),
        gw.post(None, encode(body), Authorization="Bearer two words"),
    ):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"] == "unauthorized"

    token = add_terminal(base, hall="hall-r", window="W09")
    assert gw.post_json(token, body).status_code == 202
    revoked = terminals(base, "revoke", "--hall", "hall-r", "--window", "W09")
    assert revoked.returncode == 0, revoked.stderr
    again = ev(hall_id="hall-r", window_id="W09")
    answer = gw.post_json(token, again)  # at once: no cache to expire
    assert answer.status_code == 401, answer.text
    assert "revoked" in answer.json()["message"]
    assert _on_topic(gw.settings, {again["event_id"]}) == []


def test_a_token_of_hall_a_cannot_write_hall_b(gw: Gateway, token_a: str, token_b: str) -> None:
    own, foreign = ev(), {**ev(), **HALL_B}
    answer = gw.post_json(token_a, [own, foreign])
    assert answer.status_code == 403, answer.text
    assert answer.json()["field"] == "hall_id" and "'hall-b'" in answer.json()["message"]
    other_window = ev(window_id="W02")
    assert gw.post_json(token_a, other_window).status_code == 403
    # An invalid event speaking for hall B is refused too: a dead letter may be replayed.
    bad_foreign = {**foreign, "occurred_at": _future(), "event_id": str(uuid.uuid4())}
    assert gw.post_json(token_a, [own, bad_foreign]).status_code == 403
    ids = {own["event_id"], foreign["event_id"], other_window["event_id"]}
    assert _on_topic(gw.settings, ids) == []  # nothing of those requests was produced
    assert _letters(gw.settings, bad_foreign["event_id"]) == []
    # hall B's own token writes hall B
    assert gw.post_json(token_b, foreign).status_code == 202


def test_413_over_the_size_and_count_limits(gw: Gateway, token_a: str) -> None:
    too_many = [ev() for _ in range(gw.settings.gateway_max_events + 1)]
    answer = gw.post_json(token_a, too_many)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == "too_many_events"
    lines = "".join(json.dumps(e) + "\n" for e in too_many)
    assert gw.post(token_a, lines, "application/x-ndjson").status_code == 413
    huge = json.dumps([ev(case_id="x" * 60_000) for _ in range(20)])  # 1.2 MB
    answer = gw.post(token_a, huge)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == "body_too_large"
    chunked = gw.post(token_a, iter_chunks(huge.encode()))
    assert chunked.status_code == 413, chunked.text
    ids = {e["event_id"] for e in too_many}
    assert _on_topic(gw.settings, ids) == []


def iter_chunks(data: bytes, size: int = 65_536) -> Any:
    """A body without Content-Length (chunked transfer encoding)."""

    class Chunks:
        def __iter__(self) -> Iterator[bytes]:
            for start in range(0, len(data), size):
                yield data[start : start + size]

    return Chunks()


def test_429_over_the_terminal_rate_with_retry_after(base: Settings, tmp_path: Path) -> None:
    settings = base.model_copy(update={"gateway_rate_per_second": 5.0, "gateway_burst": 10})
    token_c = add_terminal(settings, hall="hall-c", window="W01")
    token_d = add_terminal(settings, hall="hall-d", window="W01")
    gateway = start_gateway(settings, tmp_path / "gateway.log")
    try:
        c = {"hall_id": "hall-c", "window_id": "W01"}
        assert gateway.post_json(token_c, [ev(**c) for _ in range(10)]).status_code == 202
        refused = gateway.post_json(token_c, [ev(**c) for _ in range(5)])
        assert refused.status_code == 429, refused.text
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 2
        assert refused.json()["error"] == "rate_limited"
        d = {"hall_id": "hall-d", "window_id": "W01"}  # per terminal: D is not throttled
        assert gateway.post_json(token_d, [ev(**d) for _ in range(10)]).status_code == 202
        time.sleep(wait)
        assert gateway.post_json(token_c, [ev(**c) for _ in range(5)]).status_code == 202
    finally:
        gateway.stop()


def test_503_when_kafka_does_not_acknowledge(base: Settings, token_a: str, tmp_path: Path) -> None:
    """A broker that never answers: 503 with Retry-After, nothing reported accepted."""
    settings = base.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "gateway_ack_timeout_seconds": 2.0,
        }
    )
    gateway = start_gateway(settings, tmp_path / "gateway.log")
    try:
        for body in ([ev(), ev()], [ev(occurred_at="2024-12-10T10:00:00")]):
            answer = gateway.post_json(token_a, body)
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert "results" not in answer.json()
            assert "re-send" in answer.json()["message"]
        ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["kafka"] != "ok"
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
    finally:
        gateway.stop()


def test_tls_when_a_certificate_and_key_are_set(
    base: Settings, token_a: str, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    settings = base.model_copy(update={"gateway_tls_cert": cert, "gateway_tls_key": key})
    gateway = start_gateway(settings, tmp_path / "gateway.log")
    try:
        assert gateway.url.startswith("https://")
        sent = ev()
        answer = gateway.post_json(token_a, sent)
        assert answer.status_code == 202, answer.text
        assert _on_topic(base, {sent["event_id"]}) == [encode(sent)]
        plain = gateway.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{plain}/v1/events", content=encode(ev()), timeout=5)
    finally:
        gateway.stop()
