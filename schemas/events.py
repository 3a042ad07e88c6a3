"""The v1 service event: model and validation (reasons in :mod:`schemas.rejections`).

Validation is hand-written rather than delegated to a JSON Schema engine
because it runs on every message in the worker and must name the exact
reason, field and value of a rejection. ``event.schema.json`` documents the
same contract for integrators; a test keeps the two in agreement.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from schemas.catalog import EventType
from schemas.rejections import EventRejected, RejectReason, show_value

SCHEMA_VERSION = 1
MAX_NAME_CHARS = 64
FUTURE_TOLERANCE = timedelta(minutes=10)
EARLIEST_ACCEPTED = datetime(2000, 1, 1, tzinfo=UTC)

# \Z, not $: "$" also matches before a final newline, which the JSON Schema rejects.
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
# RFC 3339 date-time: full date, 'T', time with optional fraction, and an offset.
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?\Z",
    re.ASCII,
)
_TYPES = {t.value: t for t in EventType}
_json_text: Callable[[str], str] = encode_basestring  # json.dumps(str, ensure_ascii=False)
_TYPE_JSON = {t: _json_text(t.value).encode() for t in EventType}
_SCHEMA_VERSION_JSON = str(SCHEMA_VERSION).encode()
_NAMES_JSON: dict[str, bytes] = {}
_NAMES_KEPT = 50_000  # halls x windows x departments x items of a province, with room


def _json_utf8(name: str) -> bytes:
    """``json.dumps(name, ensure_ascii=False)`` as UTF-8, remembered for repeated names."""
    found = _NAMES_JSON.get(name)
    if found is None:
        found = _json_text(name).encode()
        if len(_NAMES_JSON) < _NAMES_KEPT:
            _NAMES_JSON[name] = found
    return found


_DAY = timedelta(hours=24)
_NAME_FIELDS = ("hall_id", "window_id", "department")
_OPTIONAL_FIELDS = ("item_code", "case_id")
_REQUIRED_FIELDS = ("schema_version", "event_id", "event_type", "occurred_at", *_NAME_FIELDS)


def _utc_text(moment: datetime) -> str:
    """An instant already in UTC as canonical text, e.g. ``2024-12-09T01:30:00Z``."""
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ServiceEvent:
    """One valid service act (or heartbeat) at a window terminal."""

    event_id: str  # canonical lower-case hyphenated UUID
    event_type: EventType
    occurred_at: datetime  # aware; the offset the terminal sent is kept
    hall_id: str
    window_id: str
    department: str
    item_code: str | None = None
    case_id: str | None = None

    def canonical(self) -> dict[str, Any]:
        """Contract fields only, instant normalised to UTC: equal acts give equal dicts."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "event_type": self.event_type.value,
            "occurred_at": self.occurred_utc,
            "hall_id": self.hall_id,
            "window_id": self.window_id,
            "department": self.department,
            "item_code": self.item_code,
            "case_id": self.case_id,
        }

    # Two derived strings are cached in the instance dict (the dataclass is frozen;
    # functools.cached_property takes a lock per access on Python 3.11).

    def local_date(self, zone: ZoneInfo) -> date:
        """The hall-local calendar date (cached: every stage of counting asks for it)."""
        cached: tuple[ZoneInfo, date] | None = self.__dict__.get("_local")
        if cached is None or cached[0] is not zone:
            cached = (zone, self.occurred_at.astimezone(zone).date())
            self.__dict__["_local"] = cached
        return cached[1]

    @property
    def occurred_utc(self) -> str:
        """The instant as canonical UTC text, e.g. ``2024-12-09T01:30:00Z``."""
        cached: str | None = self.__dict__.get("_utc")
        if cached is None:
            cached = _utc_text(self.occurred_at.astimezone(UTC))
            self.__dict__["_utc"] = cached
        return cached

    def to_json(self) -> bytes:
        """Compact canonical JSON."""
        return orjson.dumps(self.canonical())

    def to_row(self) -> list[Any]:
        """The event as a positional row, with its fingerprint: the compact form the
        stages pass between them (:func:`from_row` reads it back)."""
        return [
            self.event_id,
            self.event_type.value,
            self.occurred_utc,
            self.hall_id,
            self.window_id,
            self.department,
            self.item_code,
            self.case_id,
            self.fingerprint(),
        ]

    def fingerprint(self) -> str:
        """Content hash that tells a faithful re-send from a conflicting one (cached)."""
        cached: str | None = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = self.__dict__["_fingerprint"] = self._fingerprint()
        return cached

    def _fingerprint(self) -> str:
        # Byte for byte ``json.dumps(self.canonical(), ensure_ascii=False,
        # sort_keys=True)``, the definition stored fingerprints were made with
        # (tests/unit/test_events.py checks it for any text), spelled out because it
        # runs for every event entering hallstats: UTF-8 pieces, the names that repeat
        # (hall, window, department, item) encoded once each (a CJK name costs as much
        # to encode as to hash), the rest directly.
        named, text, case, item = _json_utf8, _json_text, self.case_id, self.item_code
        body = b"".join(
            (
                b'{"case_id": ',
                b"null" if case is None else text(case).encode(),
                b', "department": ',
                named(self.department),
                b', "event_id": ',
                text(self.event_id).encode(),
                b', "event_type": ',
                _TYPE_JSON[self.event_type],
                b', "hall_id": ',
                named(self.hall_id),
                b', "item_code": ',
                b"null" if item is None else named(item),
                b', "occurred_at": ',
                text(self.occurred_utc).encode(),
                b', "schema_version": ',
                _SCHEMA_VERSION_JSON,
                b', "window_id": ',
                named(self.window_id),
                b"}",
            )
        )
        return hashlib.sha256(body).hexdigest()[:32]

    @classmethod
    def from_row(cls, row: list[Any], local: tuple[ZoneInfo, date] | None = None) -> ServiceEvent:
        """Rebuild an event from :meth:`to_row` (hallstats' own, already validated);
        ``local`` = (zone, the local date in it) when the sender already knew it."""
        event_id, event_type, utc, hall_id, window_id, department, item, case, fingerprint = row
        fields = {
            "event_id": event_id,
            "event_type": _TYPES[event_type],
            "occurred_at": datetime.fromisoformat(utc),
            "hall_id": hall_id,
            "window_id": window_id,
            "department": department,
            "item_code": item,
            "case_id": case,
            "_utc": utc,
            "_fingerprint": fingerprint,
        }
        if local is not None:
            fields["_local"] = local
        return _filled(fields)


_new_event = ServiceEvent.__new__
_set_attribute = object.__setattr__


def _filled(fields: dict[str, Any]) -> ServiceEvent:
    """An event whose fields (and cached derived values) are known valid: its instance
    dict is set in one step. The hot path of both stages (every event), where eight
    frozen-dataclass ``__setattr__`` calls, or even ``__dict__.update``, cost twice as much.
    """
    event = _new_event(ServiceEvent)
    _set_attribute(event, "__dict__", fields)
    return event


def parse_timestamp(value: Any, field: str = "occurred_at") -> datetime:
    """RFC 3339 with an explicit offset; naive or malformed times are rejected."""
    if not isinstance(value, str):
        raise EventRejected(
            RejectReason.WRONG_TYPE,
            field,
            "an RFC 3339 string",
            f"{type(value).__name__} {show_value(value)}",
        )
    match = _RFC3339_RE.match(value)
    if match is None:
        raise EventRejected(
            RejectReason.INVALID_TIMESTAMP,
            field,
            "RFC 3339 like 2024-12-09T09:30:00+08:00",
            show_value(value),
        )
    if match.group(8) is None:
        raise EventRejected(
            RejectReason.NAIVE_TIMESTAMP,
            field,
            "an explicit offset ('Z' or '+08:00')",
            show_value(value),
        )
    try:
        moment = datetime.fromisoformat(value.upper())
        moment.astimezone(UTC)  # out-of-range instants (year 1 at +14:00) fail here
    except (ValueError, OverflowError) as exc:
        raise EventRejected(
            RejectReason.INVALID_TIMESTAMP,
            field,
            "a real calendar date and time",
            f"{show_value(value)} ({exc})",
        ) from exc
    offset = moment.utcoffset()
    if offset is None or abs(offset) >= _DAY:  # pragma: no cover - regex bounds it
        raise EventRejected(
            RejectReason.INVALID_TIMESTAMP, field, "an offset under 24h", show_value(value)
        )
    return moment


def _name(data: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise EventRejected(RejectReason.MISSING_FIELD, field, "a non-empty string", "nothing")
        return None
    if not isinstance(value, str):
        raise EventRejected(
            RejectReason.WRONG_TYPE,
            field,
            "a string",
            f"{type(value).__name__} {show_value(value)}",
        )
    if required and not value:
        raise EventRejected(RejectReason.INVALID_VALUE, field, "a non-empty string", '""')
    if required and len(value) > MAX_NAME_CHARS:
        raise EventRejected(
            RejectReason.INVALID_VALUE,
            field,
            f"at most {MAX_NAME_CHARS} characters",
            f"{len(value)} characters {show_value(value)}",
        )
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate escaped as \ud800 in JSON
            raise EventRejected(
                RejectReason.INVALID_VALUE,
                field,
                "valid Unicode text",
                f"a lone surrogate at character {exc.start}: {show_value(value)}",
            ) from None
    return value


def _plain_text(value: Any, required: bool) -> bool:
    """A string the contract accepts as it is (see :func:`_name`)."""
    if type(value) is not str:
        return not required and value is None
    if required and not 0 < len(value) <= MAX_NAME_CHARS:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _accept_fast(data: Any, now: datetime | None) -> ServiceEvent | None:
    """The event when every rule plainly holds, else None and :func:`validate_object`
    decides (and names the reason). Never accepts what the full checks reject."""
    if type(data) is not dict:
        return None
    version, event_id, raw_type, stamp = (
        data.get("schema_version"),
        data.get("event_id"),
        data.get("event_type"),
        data.get("occurred_at"),
    )
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    if type(event_id) is not str or _UUID_RE.match(event_id) is None:
        return None
    event_type = _TYPES.get(raw_type) if type(raw_type) is str else None
    if event_type is None or type(stamp) is not str:
        return None
    match = _RFC3339_RE.match(stamp)
    if match is None or match.group(8) is None:
        return None
    try:
        moment = datetime.fromisoformat(stamp.upper())
        utc = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if utc < EARLIEST_ACCEPTED or (now is not None and utc > now + FUTURE_TOLERANCE):
        return None
    hall_id, window_id, department = (
        data.get("hall_id"),
        data.get("window_id"),
        data.get("department"),
    )
    item_code, case_id = data.get("item_code"), data.get("case_id")
    if not (
        _plain_text(hall_id, True)
        and _plain_text(window_id, True)
        and _plain_text(department, True)
        and _plain_text(item_code, False)
        and _plain_text(case_id, False)
    ):
        return None
    # Every field checked above; with the UTC text this check already paid for.
    return _filled(
        {
            "event_id": event_id.lower(),
            "event_type": event_type,
            "occurred_at": moment,
            "hall_id": hall_id,
            "window_id": window_id,
            "department": department,
            "item_code": item_code,
            "case_id": case_id,
            # A whole-second UTC stamp is already canonical, upper-cased (half the sample).
            "_utc": (
                stamp.upper()
                if match.group(7) is None and match.group(8) in ("Z", "z")
                else _utc_text(utc)
            ),
        }
    )


def validate_object(data: Any, *, now: datetime | None = None) -> ServiceEvent:
    """Check a decoded JSON value against the v1 contract.

    ``now`` enables the receipt-time checks (future / before 2000); callers
    that replay stored events pass ``None`` to skip the future check.
    """
    fast = _accept_fast(data, now)
    if fast is not None:
        return fast
    if not isinstance(data, dict):
        raise EventRejected(
            RejectReason.NOT_AN_OBJECT,
            None,
            "a JSON object",
            f"{type(data).__name__} {show_value(data)}",
        )
    for field in _REQUIRED_FIELDS:
        if data.get(field) is None:
            raise EventRejected(
                RejectReason.MISSING_FIELD, field, "the field to be present", "nothing"
            )

    version = data["schema_version"]
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # JSON Schema's "integer" includes 1.0
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventRejected(
            RejectReason.WRONG_TYPE,
            "schema_version",
            "integer 1",
            f"{type(version).__name__} {show_value(version)}",
        )
    if version != SCHEMA_VERSION:
        raise EventRejected(
            RejectReason.UNSUPPORTED_SCHEMA_VERSION,
            "schema_version",
            "integer 1",
            show_value(version),
        )

    event_id = data["event_id"]
    if not isinstance(event_id, str):
        raise EventRejected(
            RejectReason.WRONG_TYPE,
            "event_id",
            "a UUID string",
            f"{type(event_id).__name__} {show_value(event_id)}",
        )
    if not _UUID_RE.match(event_id):
        raise EventRejected(
            RejectReason.INVALID_VALUE,
            "event_id",
            "a UUID like 123e4567-e89b-42d3-a456-426614174000",
            show_value(event_id),
        )

    raw_type = data["event_type"]
    if not isinstance(raw_type, str):
        raise EventRejected(
            RejectReason.WRONG_TYPE,
            "event_type",
            "a string",
            f"{type(raw_type).__name__} {show_value(raw_type)}",
        )
    event_type = _TYPES.get(raw_type)
    if event_type is None:
        raise EventRejected(
            RejectReason.UNKNOWN_EVENT_TYPE,
            "event_type",
            "one of " + ", ".join(t.value for t in EventType),
            show_value(raw_type),
        ) from None

    occurred_at = parse_timestamp(data["occurred_at"])
    if occurred_at < EARLIEST_ACCEPTED:
        raise EventRejected(
            RejectReason.TIMESTAMP_TOO_OLD,
            "occurred_at",
            "2000-01-01T00:00:00Z or later",
            show_value(data["occurred_at"]),
        )
    if now is not None and occurred_at > now + FUTURE_TOLERANCE:
        raise EventRejected(
            RejectReason.FUTURE_TIMESTAMP,
            "occurred_at",
            f"no later than 10 minutes after receipt ({now.astimezone(UTC).isoformat()})",
            show_value(data["occurred_at"]),
        )

    names = {field: _name(data, field, required=True) for field in _NAME_FIELDS}
    optional = {field: _name(data, field, required=False) for field in _OPTIONAL_FIELDS}
    return ServiceEvent(
        event_id=event_id.lower(),
        event_type=event_type,
        occurred_at=occurred_at,
        hall_id=str(names["hall_id"]),
        window_id=str(names["window_id"]),
        department=str(names["department"]),
        item_code=optional["item_code"],
        case_id=optional["case_id"],
    )


def parse_event(raw: bytes | None, *, max_bytes: int, now: datetime | None = None) -> ServiceEvent:
    """Decode and validate one Kafka message value."""
    if raw is None:
        raise EventRejected(
            RejectReason.INVALID_JSON, None, "a JSON object", "an empty (null) message"
        )
    if len(raw) > max_bytes:
        raise EventRejected(
            RejectReason.OVERSIZE_MESSAGE, None, f"at most {max_bytes} bytes", f"{len(raw)} bytes"
        )
    try:  # the fast path; where orjson declines, the standard library decides
        return validate_object(orjson.loads(raw), now=now)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected(
            RejectReason.INVALID_UTF8,
            None,
            "UTF-8 text",
            f"byte 0x{raw[exc.start]:02x} at position {exc.start}",
        ) from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also over-long integers
        detail = (
            f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else f"{type(exc).__name__}: {exc}"[:120]
        )
        raise EventRejected(RejectReason.INVALID_JSON, None, "a JSON object", detail) from None
    return validate_object(data, now=now)
