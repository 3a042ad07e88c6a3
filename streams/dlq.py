"""Dead-letter records: why a message was rejected, where it came from, its exact bytes."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


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
    """The DLQ message value: machine-readable reason plus the original bytes (base64)."""
    text: str | None
    try:
        text = original.decode("utf-8") if original is not None else None
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
