"""The dead-letter record, the DLQ's contract: why a message was rejected, where it
came from, and its exact bytes. The worker writes it with :func:`dead_letter`;
readers parse it with :meth:`DeadLetter.from_json`; nothing else knows its fields."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The original also as text, for a human reading the topic, only up to this size:
# the base64 copy is the authoritative one, and a second full copy of a large
# original would double the record (past what the DLQ topic takes).
ORIGINAL_TEXT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def dead_letter(
    rejection: dict[str, Any],
    original: bytes | None,
    source: SourcePosition,
    key: bytes | None = None,
    now: datetime | None = None,
) -> bytes:
    """The DLQ message value: machine-readable reason plus the original bytes (base64),
    and the original as text too when it is UTF-8 and at most
    :data:`ORIGINAL_TEXT_MAX_BYTES` (else ``original_text`` is null)."""
    text: str | None = None
    if original is not None and len(original) <= ORIGINAL_TEXT_MAX_BYTES:
        try:
            text = original.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    body = {
        **rejection,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
            "key_b64": base64.b64encode(key).decode() if key is not None else None,
        },
        "rejected_at": (now or datetime.now(UTC)).isoformat(),
        "original_b64": base64.b64encode(original).decode() if original is not None else None,
        "original_text": text,
    }
    return json.dumps(body, ensure_ascii=False).encode()


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    field: str | None
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_at: str
    original: bytes | None
    key: bytes | None
    dlq_offset: int

    @classmethod
    def from_json(cls, data: dict[str, Any], dlq_offset: int) -> DeadLetter:
        source = data.get("source") or {}
        original = data.get("original_b64")
        key = source.get("key_b64")
        return cls(
            reason=str(data.get("reason")),
            field=data.get("field"),
            message=str(data.get("message", "")),
            source_topic=str(source.get("topic")),
            source_partition=int(source.get("partition", -1)),
            source_offset=int(source.get("offset", -1)),
            rejected_at=str(data.get("rejected_at", "")),
            original=base64.b64decode(original) if original is not None else None,
            key=base64.b64decode(key) if key is not None else None,
            dlq_offset=dlq_offset,
        )
