"""The gateway against malformed HTTP (always a clear 4xx, never a 500), and its
operations endpoints and terminal credentials (split from test_gateway.py)."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid

import httpx
import pytest

from hallstats.settings import Settings
from tests.support.events import encode
from tests.support.gateway import (
    Gateway,
    ev,
    terminals,
)

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- malformed HTTP (4xx)


def test_wrong_content_type_is_415(gw: Gateway, token_a: str) -> None:
    body = encode(ev())
    for content_type in (
        None,
        "text/plain",
        "application/xml",
        "application/json; charset=latin-1",
    ):
        answer = gw.post(token_a, body, content_type)
        assert answer.status_code == 415, (content_type, answer.text)
        assert "application/x-ndjson" in answer.json()["message"] or "utf-8" in answer.text
    assert gw.post(token_a, body, "Application/JSON; charset=UTF-8").status_code == 202


def test_malformed_bodies_are_400(gw: Gateway, token_a: str) -> None:
    one = json.dumps(ev())
    cases = {
        "truncated array": (f"[{one}, {one[:30]}".encode(), "application/json"),
        "unterminated array": (f"[{one}".encode(), "application/json"),
        "junk after array": (f"[{one}] x".encode(), "application/json"),
        "array not UTF-8": (b"[" + one.encode().replace(b"hall-a", b"hall-\xff") + b"]", None),
        "empty body": (b"", "application/json"),
        "empty array": (b"[ ]", "application/json"),
        "blank lines": (b"\n \r\n", "application/x-ndjson"),
    }
    for name, (body, content_type) in cases.items():
        answer = gw.post(token_a, body, content_type or "application/json")
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["message"].startswith("request body"), name


def _raw_http(
    url: str, data: bytes, *, close_write: bool = False, more: list[bytes] | None = None
) -> bytes:
    """Bytes straight on a socket; ``more`` are sent one by one, slowly."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        try:
            for piece in more or []:
                time.sleep(0.02)
                conn.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: read what it said
        if close_write:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := conn.recv(65_536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def test_malformed_http_is_4xx_never_500(gw: Gateway, token_a: str) -> None:
    auth = f"Authorization: Bearer {token_a}\r\n".encode()
    huge = b"X-Padding: " + b"a" * 40_000 + b"\r\n"
    head = b"POST /v1/events HTTP/1.1\r\nHost: gw\r\n"
    answers = {
        "huge headers": _raw_http(gw.url, head + huge + b"Content-Length: 0\r\n\r\n"),
        "garbage request line": _raw_http(gw.url, b"HELLO\x00 there\r\n\r\n"),
        "bad content length": _raw_http(
            gw.url, head + auth + b"Content-Type: application/json\r\nContent-Length: x\r\n\r\n{}"
        ),
    }
    for name, answer in answers.items():
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        assert 400 <= status < 500, (name, answer[:200])
    assert answers["huge headers"].startswith(b"HTTP/1.1 431")
    # Headers arriving in pieces (uvicorn's own bound applies before the app sees them)
    piecewise = _raw_http(gw.url, head, more=[huge] * 8)
    assert piecewise.startswith(b"HTTP/1.1 4"), piecewise
    # A body cut short: the client promised more and hung up
    cut = head + auth + b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n[{"
    answer = _raw_http(gw.url, cut, close_write=True)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    # ... and the gateway goes on serving, and never logged a server error
    assert gw.post_json(token_a, ev()).status_code == 202
    log = gw.log.read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


# ---------------------------------------------------------------- operations


def test_health_readiness_metrics_and_openapi(gw: Gateway, token_a: str) -> None:
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    gw.post_json(token_a, [ev(), ev(event_type="nope")])
    gw.post_json(None, ev())
    text = httpx.get(f"{gw.url}/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['hallstats_gateway_requests_total{status="202"}'] >= 1
    assert samples['hallstats_gateway_requests_total{status="401"}'] >= 1
    assert samples['hallstats_gateway_events_total{result="accepted"}'] >= 1
    assert samples['hallstats_gateway_rejected_total{reason="unknown_event_type"}'] >= 1
    assert samples["hallstats_gateway_request_seconds_count"] >= 2
    assert samples["hallstats_gateway_kafka_ack_seconds_count"] >= 1
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    post = spec["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}


def test_terminals_cli_prints_the_token_once_and_keeps_only_its_hash(base: Settings) -> None:
    added = terminals(base, "add", "--hall", "hall-t", "--window", "W05")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("hst_") and len(token) > 40
    listed = terminals(base, "list")
    assert listed.returncode == 0, listed.stderr
    assert token not in listed.stdout and token not in listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("hall-t\tW05"))
    assert row.endswith("active")
    assert terminals(base, "revoke", "--hall", "hall-t", "--window", "W05").returncode == 0
    listed = terminals(base, "list").stdout
    row = next(line for line in listed.splitlines() if line.startswith("hall-t\tW05"))
    assert "revoked" in row
    missing = terminals(base, "revoke", "--hall", "hall-none", "--window", "W05")
    assert missing.returncode == 2 and "found none" in missing.stderr
    bad = terminals(base, "add", "--hall", "", "--window", "W05")
    assert bad.returncode == 2


def test_tokens_are_never_logged(gw: Gateway, base: Settings, token_a: str) -> None:
    """Every token this module used, valid, revoked or forged, is absent from the log."""
    forged = "hst_" + base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")
    gw.post_json(forged, ev())
    gw.post(token_a, b"{broken", "application/json")
    gw.post(token_a, b"[1,", "application/json")
    log = gw.log.read_text(errors="replace")
    assert log, "the gateway log is empty: is it being written?"
    for secret in (token_a, forged):
        assert secret not in log
        assert secret[4:20] not in log
