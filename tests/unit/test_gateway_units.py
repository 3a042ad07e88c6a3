"""The gateway's pure parts: splitting a body into messages, the token bucket."""

from __future__ import annotations

import json

import pytest

from gateway.body import JSON, NDJSON, BodyProblem, media_type, split
from gateway.limits import TokenBuckets, retry_after


def test_an_array_keeps_each_elements_exact_bytes() -> None:
    one, two = '{"a": 1,  "b": "民"}', '{"x":\n[1, 2]}'
    assert split(f" [ {one} ,\n{two} ] \n".encode(), JSON, 10) == [one.encode(), two.encode()]
    assert split(b'{"a": 1}\n', JSON, 10) == [b'{"a": 1}']
    assert split(b'{"a"\n\r\n  \n{"b": 2}\r\n', NDJSON, 10) == [b'{"a"', b'{"b": 2}']
    escaped = json.dumps([{"s": "\ud800"}])  # a lone surrogate stays escaped, as sent
    assert split(escaped.encode(), JSON, 10) == [b'{"s": "\\ud800"}']


@pytest.mark.parametrize(
    ("body", "kind", "status"),
    [
        (b"", JSON, 400),
        (b"[]", JSON, 400),
        (b"[1,", JSON, 400),
        (b"[1 2]", JSON, 400),
        (b"[1] 2", JSON, 400),
        (b"[\xff]", JSON, 400),
        (b"\n\n", NDJSON, 400),
        (b"[1,2,3,4]", JSON, 413),
        (b"1\n2\n3\n4\n", NDJSON, 413),
    ],
)
def test_bodies_that_cannot_be_split_are_refused(body: bytes, kind: str, status: int) -> None:
    with pytest.raises(BodyProblem) as refused:
        split(body, kind, 3)
    assert refused.value.status == status


def test_media_types() -> None:
    assert media_type("Application/JSON; charset=utf-8") == JSON
    assert media_type("application/x-ndjson") == NDJSON
    for header in (None, "", "text/plain", "application/json; charset=iso-8859-1"):
        with pytest.raises(BodyProblem) as refused:
            media_type(header)
        assert refused.value.status == 415


def test_token_bucket_rate_burst_debt_and_refund() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=10.0, burst=20, clock=lambda: now[0])
    assert buckets.take("a", 20) == 0.0  # a full burst at once
    assert buckets.take("a", 1) == pytest.approx(0.1)  # then one event per 0.1 s
    assert buckets.take("b", 5) == 0.0  # per key
    now[0] = 1.0
    assert buckets.take("a", 10) == 0.0
    # larger than the burst: admitted when the bucket is full, paid off as debt
    now[0] = 10.0
    assert buckets.take("a", 50) == 0.0
    assert buckets.take("a", 1) == pytest.approx(3.1)
    buckets.refund("a", 50)  # our outage, not the terminal's excess
    assert buckets.take("a", 1) == 0.0
    assert retry_after(0.01) == "1" and retry_after(3.1) == "4"


def test_a_byte_order_mark_is_framing_not_part_of_the_first_event() -> None:
    one, two = b'{"a": 1}', b'{"b": 2}'
    assert split(b"\xef\xbb\xbf[" + one + b"," + two + b"]", JSON, 10) == [one, two]
    assert split(b"\xef\xbb\xbf" + one, JSON, 10) == [one]
    assert split(b"\xef\xbb\xbf" + one + b"\n" + two + b"\n", NDJSON, 10) == [one, two]


def test_several_values_sent_as_application_json_are_refused_not_one_event() -> None:
    for body in (b'{"a": 1}\n{"b": 2}\n', b'{"a": 1} {"b": 2}', b"1 2"):
        with pytest.raises(BodyProblem) as refused:
            split(body, JSON, 10)
        assert (refused.value.status, refused.value.error) == (400, "invalid_body")
        assert NDJSON in str(refused.value)
    assert split(b'{"a": 1', JSON, 10) == [b'{"a": 1']  # broken, but one message


def test_a_huge_number_or_deep_nesting_is_the_elements_problem_not_the_requests() -> None:
    huge = b'{"n": ' + b"9" * 5000 + b"}"
    deep = b'{"d": ' + b"[" * 100_000 + rb'"]}\\"' + b"]" * 100_000 + b"}"
    good = b'{"s": "]\\"}"}'
    for odd in (huge, deep, b"NaN", b"1e999"):
        assert split(b"[" + odd + b", " + good + b"]", JSON, 10) == [odd, good]
    with pytest.raises(BodyProblem) as refused:
        split(b"[" + b"[" * 100_000 + b", " + good + b"]", JSON, 10)  # never closed
    assert refused.value.status == 400
