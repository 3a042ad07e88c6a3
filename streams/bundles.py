"""Bundles: how validated events travel from the validate stage to the count stage.

Faust's per-message overhead (a future, a buffer, an ack) costs far more than
validating or counting an event, so the validate stage sends one message per
(batch, target partition) holding many events. The target partition is a
stable hash of event_id, so every copy of one event still meets in one
partition. An event inside a bundle is addressed by its *position*:
``offset * 2**16 + index``, which grows along the partition like an offset.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from schemas.events import ServiceEvent

INDEX_BITS = 16
MAX_BUNDLE_EVENTS = 2**INDEX_BITS - 1
MAX_BUNDLE_BYTES = 512 * 1024  # well under Kafka's default 1 MiB message limit

#: Kafka header on a bundle: the oldest Kafka timestamp (ms) of the raw messages
#: it carries, so latency "from Kafka" includes time spent waiting in the raw topic.
RAW_TIMESTAMP_HEADER = "hs-raw-ts"


def partition_for(event_id: str, partitions: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``)."""
    return zlib.crc32(event_id.encode()) % partitions


def position(offset: int, index: int) -> int:
    return (offset << INDEX_BITS) | index


def pack(events: Iterable[ServiceEvent]) -> Iterator[bytes]:
    """JSON arrays of event rows (:meth:`ServiceEvent.to_row`), split to stay under the
    size limits."""
    chunk: list[bytes] = []
    size = 2
    for event in events:
        body = orjson.dumps(event.to_row())
        if chunk and (len(chunk) >= MAX_BUNDLE_EVENTS or size + len(body) + 1 > MAX_BUNDLE_BYTES):
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size = [], 2
        chunk.append(body)
        size += len(body) + 1
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"


def unpack(raw: bytes) -> list[ServiceEvent]:
    return [ServiceEvent.from_row(row) for row in orjson.loads(raw)]


def raw_timestamp_ms(headers: Any, fallback_ms: int) -> int:
    """The oldest raw message time a bundle carries, else the bundle's own time."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for key, value in items:
        if key == RAW_TIMESTAMP_HEADER and value and value.isdigit():
            return int(value)
    return int(fallback_ms)
