"""The gateway at its edges, over real HTTP on loopback against the real broker: large
rejected events and their dead letters, Kafka refusing for good, the DLQ topic's
size, bodies that are not what their Content-Type says, and credentials in answers.

(tests/integration/test_gateway.py holds the contract's every status; this module
starts its own gateway on its own topics.)
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from hallstats.kafka import DLQ_MAX_MESSAGE_BYTES, client_config, ensure_topics
from hallstats.settings import Settings
from schemas.dlq import DeadLetter
from tests.support.events import encode, event
from tests.support.gateway import Gateway, add_terminal, read_topic, start_gateway

pytestmark = pytest.mark.integration

HALL = {"hall_id": "hall-e", "window_id": "W02"}


def ev(**changes: Any) -> dict[str, Any]:
    return {**event(**HALL), **changes}


@pytest.fixture(scope="module")
def token(base: Settings) -> str:
    return add_terminal(base, hall=HALL["hall_id"], window=HALL["window_id"])


def _ids_on_topic(settings: Settings) -> list[str]:
    return [json.loads(r.value).get("event_id") for r in read_topic(settings, settings.topic)]


def _letters(settings: Settings, event_id: str) -> list[tuple[DeadLetter, dict[str, Any]]]:
    found = []
    for record in read_topic(settings, settings.dlq_topic):
        data = json.loads(record.value)
        letter = DeadLetter.from_json(data, -1)
        if letter.original is not None and event_id.encode() in letter.original:
            found.append((letter, data))
    return found


def _max_message_bytes(settings: Settings, topic: str) -> int:
    admin = AdminClient(client_config(settings))
    resource = ConfigResource(ResourceType.TOPIC, topic)
    (future,) = admin.describe_configs([resource]).values()
    return int(future.result()["max.message.bytes"].value)


# ---------------------------------------------------------------- large dead letters


def test_a_900_kb_event_is_dead_lettered_and_the_first_answer_is_final(
    gw: Gateway, token: str
) -> None:
    """Its dead letter (base64 of 900 KB, over 1 MB) fits the DLQ: the request is
    answered event by event, not 503 (which made the terminal re-send, and the
    gateway re-produce, its valid events forever)."""
    good, other = ev(), ev()
    huge = ev(case_id=secrets.token_hex(450_000))  # hex: lz4 cannot shrink it much
    body = encode([good, huge, other])
    assert len(encode(huge)) > 900_000 and len(body) < gw.settings.gateway_max_body_bytes

    answer = gw.post(token, body)
    assert answer.status_code == 202, answer.text[:500]
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["reason"] == "oversize_message"
    assert results[1]["event_id"] == huge["event_id"]

    ids = _ids_on_topic(gw.settings)
    assert ids.count(good["event_id"]) == 1 and ids.count(other["event_id"]) == 1
    assert huge["event_id"] not in ids
    ((letter, data),) = _letters(gw.settings, huge["event_id"])
    assert letter.reason == "oversize_message"
    assert letter.original == encode(huge)  # the exact bytes, from base64
    assert data["original_text"] is None  # not a second 900 KB copy


def test_small_dead_letters_keep_the_original_as_text(gw: Gateway, token: str) -> None:
    naive = ev(occurred_at="2024-12-10T10:00:00")
    assert gw.post_json(token, [naive]).status_code == 422
    ((letter, data),) = _letters(gw.settings, naive["event_id"])
    assert data["original_text"] == encode(naive).decode()
    assert letter.original == encode(naive)


def test_the_dlq_topic_takes_2_mib_records_and_an_older_one_is_upgraded(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack.isolated("hsdlq", tmp_path)
    admin = AdminClient(client_config(settings))
    (created,) = admin.create_topics([NewTopic(settings.dlq_topic, 1, 1)]).values()
    created.result()  # as an older hallstats created it: the broker's 1 MB
    try:
        assert _max_message_bytes(settings, settings.dlq_topic) < DLQ_MAX_MESSAGE_BYTES
        ensure_topics(settings, [(settings.topic, 1), (settings.dlq_topic, 1)])
        assert _max_message_bytes(settings, settings.dlq_topic) == DLQ_MAX_MESSAGE_BYTES
        assert _max_message_bytes(settings, settings.topic) < DLQ_MAX_MESSAGE_BYTES
    finally:
        for future in admin.delete_topics([settings.topic, settings.dlq_topic]).values():
            future.result()


def test_kafka_refusing_for_good_is_500_without_retry_after(
    base: Settings, token: str, tmp_path: Path
) -> None:
    """A message Kafka will never take (here: events allowed past the input topic's
    1 MB by a misconfigured gateway) is not a 503 to retry forever; nothing is
    reported accepted."""
    settings = base.model_copy(
        update={"max_message_bytes": 4_000_000, "gateway_max_body_bytes": 4_000_000}
    )
    gateway = start_gateway(settings, tmp_path / "gateway.log")
    try:
        over_topic = ev(case_id=secrets.token_hex(600_000))  # 1.2 MB: the broker refuses
        over_producer = ev(case_id=secrets.token_hex(1_100_000))  # 2.2 MB: the producer
        for huge in (over_topic, over_producer):
            answer = gateway.post_json(token, [ev(), huge])
            assert answer.status_code == 500, answer.text[:500]
            assert "retry-after" not in answer.headers
            assert "results" not in answer.json()
            assert "MSG_SIZE_TOO_LARGE" in answer.json()["message"]
            assert huge["event_id"] not in _ids_on_topic(settings)
    finally:
        gateway.stop()


# ---------------------------------------------------------------- framing


def test_an_array_after_a_byte_order_mark_is_its_events(gw: Gateway, token: str) -> None:
    events = [ev(), ev()]
    answer = gw.post(token, b"\xef\xbb\xbf" + encode(events))
    assert answer.status_code == 202, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["accepted", "accepted"]
    ids = _ids_on_topic(gw.settings)
    assert all(ids.count(e["event_id"]) == 1 for e in events)


def test_json_lines_sent_as_application_json_is_400_and_nothing_is_kept(
    gw: Gateway, token: str
) -> None:
    events = [ev(), ev()]
    body = b"".join(encode(e) + b"\n" for e in events)
    answer = gw.post(token, body, "application/json")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_body"
    assert "application/x-ndjson" in answer.json()["message"]
    ids = _ids_on_topic(gw.settings)
    for e in events:
        assert e["event_id"] not in ids and not _letters(gw.settings, e["event_id"])


def test_a_huge_number_or_deep_nesting_rejects_that_event_only(gw: Gateway, token: str) -> None:
    good = ev()
    huge = encode(ev()).replace(b'"schema_version": 1', b'"schema_version": ' + b"1" * 5000)
    deep = encode(ev(extra=[])).replace(b"[]", b"[" * 20_000 + b"]" * 20_000)
    for odd in (huge, deep):
        answer = gw.post(token, b"[" + encode(good) + b"," + odd + b"]")
        assert answer.status_code == 202, answer.text[:500]
        results = answer.json()["results"]
        assert [r["status"] for r in results] == ["accepted", "rejected"]
        assert results[1]["reason"] == "invalid_json"
        good = ev()


# ---------------------------------------------------------------- credentials


def test_no_part_of_a_token_is_echoed_in_a_401(gw: Gateway, token: str) -> None:
    secret = token.removeprefix("hst_")
    headers = [
        token,  # the token alone, no scheme
        f"{token} x",
        f"Token {token}",
        f"Basic {token}",
        f"{secret[:12]} {token}",
        f"hst {token}",
        "Bearer",
        f"Bearer{token}",
    ]
    for header in headers:
        answer = gw.post(None, encode(ev()), Authorization=header)
        assert answer.status_code == 401, (header[:8], answer.text)
        text = answer.text
        for at in range(len(secret) - 5):
            assert secret[at : at + 6] not in text, (header[:8], text)
    shown = gw.post(None, encode(ev()), Authorization="Basic dXNlcjpwYXNz").json()["message"]
    assert "'Basic'" in shown and "dXNl" not in shown
    alone = gw.post(None, encode(ev()), Authorization=token).json()["message"]
    assert "no scheme" in alone
    # A first word made of letters only (a token's start can be) is not echoed either.
    word = gw.post(None, encode(ev()), Authorization=f"Abcdefghijkl {token}").text
    assert "Abcdefghijkl" not in word and "unknown scheme" in word
