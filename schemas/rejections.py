"""The rejection vocabulary: why a message was refused, in words a machine can switch on.

Every stage that refuses input (intake, counting's conflicts, emit's client-side
checks) raises :class:`EventRejected` with one :class:`RejectReason`; the DLQ record
(:mod:`schemas.dlq`) carries it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from hallstats.errors import DataError


class RejectReason(StrEnum):
    """Why a message was rejected. A fixed vocabulary: DLQ readers switch on it."""

    OVERSIZE_MESSAGE = "oversize_message"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    INVALID_VALUE = "invalid_value"
    NAIVE_TIMESTAMP = "naive_timestamp"
    INVALID_TIMESTAMP = "invalid_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


REJECT_REASON_DOCS: dict[RejectReason, str] = {
    RejectReason.OVERSIZE_MESSAGE: "message larger than HALLSTATS_MAX_MESSAGE_BYTES",
    RejectReason.INVALID_UTF8: "bytes are not valid UTF-8",
    RejectReason.INVALID_JSON: "text is not parseable JSON",
    RejectReason.NOT_AN_OBJECT: "JSON value is not an object",
    RejectReason.MISSING_FIELD: "a required field is absent (or null)",
    RejectReason.WRONG_TYPE: "a field has the wrong JSON type",
    RejectReason.UNSUPPORTED_SCHEMA_VERSION: "schema_version is an integer other than 1",
    RejectReason.UNKNOWN_EVENT_TYPE: "event_type is not one of the catalog's types",
    RejectReason.INVALID_VALUE: "a string breaks its rule (UUID form, empty, over 64 chars)",
    RejectReason.NAIVE_TIMESTAMP: "occurred_at has no UTC offset",
    RejectReason.INVALID_TIMESTAMP: "occurred_at is not an RFC 3339 date-time",
    RejectReason.FUTURE_TIMESTAMP: "occurred_at is more than 10 minutes after receipt",
    RejectReason.TIMESTAMP_TOO_OLD: "occurred_at is before 2000-01-01T00:00:00Z",
    RejectReason.CONFLICTING_DUPLICATE: "event_id seen before with different content",
}


class EventRejected(DataError):
    """A message that breaks the contract, with a machine-readable reason."""

    def __init__(self, reason: RejectReason, field: str | None, expected: str, got: str) -> None:
        self.reason = reason
        self.field = field
        self.expected = expected
        self.got = got
        where = f"field {field!r}" if field else "message"
        super().__init__(f"{reason.value}: {where}: expected {expected}, got {got}")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "reason": self.reason.value,
            "field": self.field,
            "expected": self.expected,
            "got": self.got,
            "message": str(self),
        }


def show_value(value: Any, limit: int = 80) -> str:
    """The offending value as JSON, shortened; lone surrogates spelled as escapes so
    that the rejection itself can always be encoded (DLQ record, logs)."""
    text = json.dumps(value, ensure_ascii=False)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."
