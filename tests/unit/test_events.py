"""Validation of every bad-input class, and the JSON Schema kept in step with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.catalog import EventType
from schemas.events import parse_event
from schemas.rejections import REJECT_REASON_DOCS, EventRejected, RejectReason

NOW = datetime(2024, 12, 20, 12, 0, tzinfo=UTC)
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "event.schema.json").read_text())


def good(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "3f2b8c1e-5a4d-4e6f-8a9b-0c1d2e3f4a5b",
        "event_type": "accept",
        "occurred_at": "2024-12-09T09:30:00+08:00",
        "hall_id": "hall-provincial",
        "window_id": "W07",
        "department": "民政厅",
        "item_code": "MZ-001",
        "case_id": None,
    }
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return event


_DROP = object()


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def reject(raw: bytes) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        parse_event(raw, max_bytes=4096, now=NOW)
    return info.value


def test_valid_event_parses_and_keeps_its_instant() -> None:
    event = parse_event(encode(good(extra_field="ignored")), max_bytes=4096, now=NOW)
    assert event.event_type is EventType.ACCEPT
    assert event.occurred_at == datetime(2024, 12, 9, 1, 30, tzinfo=UTC)
    assert event.department == "民政厅"


def test_same_act_in_z_form_has_the_same_fingerprint() -> None:
    a = parse_event(encode(good()), max_bytes=4096)
    b = parse_event(
        encode(good(occurred_at="2024-12-09T01:30:00Z", event_id=good()["event_id"].upper())),
        max_bytes=4096,
    )
    assert a.fingerprint() == b.fingerprint()
    c = parse_event(encode(good(window_id="W08")), max_bytes=4096)
    assert c.fingerprint() != a.fingerprint()


CASES: list[tuple[str, bytes, RejectReason, str | None]] = [
    ("non-utf8", b'{"event_id": "\xff\xfe"}', RejectReason.INVALID_UTF8, None),
    ("broken json", b'{"schema_version": 1,', RejectReason.INVALID_JSON, None),
    ("empty", b"", RejectReason.INVALID_JSON, None),
    ("array", b"[1, 2]", RejectReason.NOT_AN_OBJECT, None),
    ("string", b'"hello"', RejectReason.NOT_AN_OBJECT, None),
    ("missing id", encode(good(event_id=_DROP)), RejectReason.MISSING_FIELD, "event_id"),
    ("null hall", encode(good(hall_id=None)), RejectReason.MISSING_FIELD, "hall_id"),
    ("missing time", encode(good(occurred_at=_DROP)), RejectReason.MISSING_FIELD, "occurred_at"),
    ("missing dept", encode(good(department=_DROP)), RejectReason.MISSING_FIELD, "department"),
    ("version str", encode(good(schema_version="1")), RejectReason.WRONG_TYPE, "schema_version"),
    ("version bool", encode(good(schema_version=True)), RejectReason.WRONG_TYPE, "schema_version"),
    ("version 1.5", encode(good(schema_version=1.5)), RejectReason.WRONG_TYPE, "schema_version"),
    (
        "version 2",
        encode(good(schema_version=2)),
        RejectReason.UNSUPPORTED_SCHEMA_VERSION,
        "schema_version",
    ),
    ("id number", encode(good(event_id=12345)), RejectReason.WRONG_TYPE, "event_id"),
    ("id not uuid", encode(good(event_id="not-a-uuid")), RejectReason.INVALID_VALUE, "event_id"),
    ("type number", encode(good(event_type=3)), RejectReason.WRONG_TYPE, "event_type"),
    (
        "unknown type",
        encode(good(event_type="approve")),
        RejectReason.UNKNOWN_EVENT_TYPE,
        "event_type",
    ),
    ("type case", encode(good(event_type="Accept")), RejectReason.UNKNOWN_EVENT_TYPE, "event_type"),
    (
        "naive time",
        encode(good(occurred_at="2024-12-09T09:30:00")),
        RejectReason.NAIVE_TIMESTAMP,
        "occurred_at",
    ),
    (
        "date only",
        encode(good(occurred_at="2024-12-09")),
        RejectReason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    (
        "garbage time",
        encode(good(occurred_at="yesterday")),
        RejectReason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    (
        "bad day",
        encode(good(occurred_at="2024-02-30T09:00:00Z")),
        RejectReason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    (
        "bad hour",
        encode(good(occurred_at="2024-12-09T25:00:00Z")),
        RejectReason.INVALID_TIMESTAMP,
        "occurred_at",
    ),
    ("epoch number", encode(good(occurred_at=1733707800)), RejectReason.WRONG_TYPE, "occurred_at"),
    (
        "future",
        encode(good(occurred_at="2024-12-20T12:11:00Z")),
        RejectReason.FUTURE_TIMESTAMP,
        "occurred_at",
    ),
    (
        "too old",
        encode(good(occurred_at="1999-12-31T23:59:59Z")),
        RejectReason.TIMESTAMP_TOO_OLD,
        "occurred_at",
    ),
    ("empty hall", encode(good(hall_id="")), RejectReason.INVALID_VALUE, "hall_id"),
    ("long window", encode(good(window_id="w" * 65)), RejectReason.INVALID_VALUE, "window_id"),
    ("dept list", encode(good(department=["民政厅"])), RejectReason.WRONG_TYPE, "department"),
    ("item number", encode(good(item_code=7)), RejectReason.WRONG_TYPE, "item_code"),
    ("oversize", encode(good(case_id="x" * 5000)), RejectReason.OVERSIZE_MESSAGE, None),
]


@pytest.mark.parametrize(
    ("raw", "reason", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rejections_name_reason_field_and_value(
    raw: bytes, reason: RejectReason, field: str | None
) -> None:
    rejection = reject(raw)
    assert rejection.reason is reason
    assert rejection.field == field
    body = rejection.as_dict()
    assert body["reason"] == reason.value
    assert body["expected"] and body["got"]
    assert reason.value in str(rejection)


def test_64_characters_is_the_limit_in_characters_not_bytes() -> None:
    parse_event(encode(good(department="厅" * 64)), max_bytes=4096, now=NOW)


def test_ten_minutes_in_the_future_is_still_accepted() -> None:
    parse_event(encode(good(occurred_at="2024-12-20T12:10:00Z")), max_bytes=4096, now=NOW)


def test_integral_float_version_is_integer_1_as_in_json_schema() -> None:
    parse_event(encode(good(schema_version=1.0)), max_bytes=4096, now=NOW)


def test_every_reason_is_documented() -> None:
    assert set(REJECT_REASON_DOCS) == set(RejectReason)


def test_json_schema_agrees_with_the_validator() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert validator.is_valid(good())
    schema_checkable = {
        RejectReason.MISSING_FIELD,
        RejectReason.WRONG_TYPE,
        RejectReason.UNSUPPORTED_SCHEMA_VERSION,
        RejectReason.UNKNOWN_EVENT_TYPE,
        RejectReason.INVALID_VALUE,
        RejectReason.NAIVE_TIMESTAMP,
    }
    for name, raw, reason, _field in CASES:
        if reason in schema_checkable:
            assert not validator.is_valid(json.loads(raw)), name


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_either_an_event_or_a_rejection(raw: bytes) -> None:
    try:
        parse_event(raw, max_bytes=200, now=NOW)
    except EventRejected as rejection:
        assert rejection.reason in RejectReason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "schema_version": json_values,
            "event_id": json_values | st.uuids().map(str),
            "event_type": json_values | st.sampled_from([t.value for t in EventType]),
            "occurred_at": json_values
            | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
            "hall_id": json_values,
            "window_id": json_values,
            "department": json_values,
            "item_code": json_values,
        },
    )
)
def test_arbitrary_objects_never_crash_validation(obj: dict[str, Any]) -> None:
    try:
        raw = json.dumps(obj).encode()
    except ValueError:
        return
    try:
        parse_event(raw, max_bytes=4096, now=NOW)
    except EventRejected as rejection:
        assert rejection.reason in RejectReason


@pytest.mark.parametrize(
    "raw",
    [
        b"1" * 5000,  # int too long for Python's int parser: a ValueError, not JSONDecodeError
        b"[" * 100000,
        encode(good(occurred_at="0001-01-01T00:00:00+14:00")),
        encode(good(occurred_at="9999-12-31T23:59:59-23:59")),
        encode(good(occurred_at="2024-12-09T09:30:00+24:00")),
    ],
)
def test_pathological_inputs_are_rejections(raw: bytes) -> None:
    with pytest.raises(EventRejected):
        parse_event(raw, max_bytes=10**6, now=NOW)


def test_a_trailing_newline_is_not_part_of_a_valid_uuid_or_timestamp() -> None:
    """Regexes end with \\Z: "$" would accept a final newline the JSON Schema rejects."""
    event_id = good()["event_id"]
    assert reject(encode(good(event_id=event_id + "\n"))).reason is RejectReason.INVALID_VALUE
    stamp = reject(encode(good(occurred_at="2024-12-09T09:30:00+08:00\n")))
    assert stamp.reason is RejectReason.INVALID_TIMESTAMP


@pytest.mark.parametrize("field", ["event_id", "event_type", "occurred_at", "hall_id", "case_id"])
def test_lone_surrogates_are_rejected_with_an_encodable_record(field: str) -> None:
    """JSON may escape a lone surrogate; it is no text, and the rejection (which quotes
    the value) must still encode to UTF-8 for the DLQ."""
    raw = encode(good()).replace(f'"{field}": "'.encode(), f'"{field}": "\\ud800'.encode(), 1)
    if field == "case_id":
        raw = encode(good(case_id="x")).replace(b'"case_id": "x', b'"case_id": "x\\ud800')
    rejection = reject(raw)
    assert rejection.field == field
    json.dumps(rejection.as_dict(), ensure_ascii=False).encode()  # no UnicodeEncodeError


@given(
    st.fixed_dictionaries(
        {
            "schema_version": st.sampled_from([1, 1.0, True, 2, "1"]),
            "event_id": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper() + "\n"),
            "event_type": st.sampled_from([t.value for t in EventType] + ["Accept", 1]),
            "occurred_at": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
            | st.datetimes(timezones=st.just(UTC)).map(  # whole seconds or not, Z or z
                lambda d: d.isoformat().replace("+00:00", "Z" if d.second % 2 else "z")
            )
            | st.sampled_from(["2024-12-09t09:30:00z", "2024-12-09T09:30:00.5+08:00"]),
            "hall_id": st.text(max_size=70) | st.none(),
            "window_id": st.text(min_size=1, max_size=3),
            "department": st.text(min_size=1, max_size=3),
        },
        optional={"item_code": st.text(max_size=5) | st.none() | st.integers()},
    )
)
def test_the_fast_path_accepts_only_what_the_full_checks_accept_and_alike(
    obj: dict[str, Any],
) -> None:
    """schemas.events._accept_fast repeats the rules for speed; it must never differ."""
    from unittest import mock

    from schemas import events

    fast = events._accept_fast(obj, NOW)
    with mock.patch.object(events, "_accept_fast", return_value=None):
        try:
            full = events.validate_object(obj, now=NOW)
        except EventRejected:
            full = None
    if fast is not None:
        assert full == fast
        assert full.occurred_utc == fast.occurred_utc
        assert full.fingerprint() == fast.fingerprint()


@given(
    names=st.lists(st.text(min_size=1, max_size=8), min_size=3, max_size=3),
    optional=st.lists(st.none() | st.text(max_size=8), min_size=2, max_size=2),
    kind=st.sampled_from(list(EventType)),
    seconds=st.integers(0, 2_000_000_000),
)
def test_the_fingerprint_is_the_hash_of_the_sorted_canonical_json(
    names: list[str], optional: list[str | None], kind: EventType, seconds: int
) -> None:
    """Stored fingerprints were made as sha256(json.dumps(canonical, ensure_ascii=False,
    sort_keys=True)); the hand-written fast form must give the same bytes for any
    text: quotes, backslashes, control characters, CJK."""
    import hashlib

    from schemas.events import ServiceEvent

    event = ServiceEvent(
        event_id="0b9e7c1e-3f0a-4c1e-9a7d-2b6f8c4d5e6f",
        event_type=kind,
        occurred_at=datetime.fromtimestamp(seconds, UTC),
        hall_id=names[0],
        window_id=names[1],
        department=names[2],
        item_code=optional[0],
        case_id=optional[1],
    )
    body = json.dumps(event.canonical(), ensure_ascii=False, sort_keys=True)
    assert event.fingerprint() == hashlib.sha256(body.encode()).hexdigest()[:32]
