"""Bundles: how validated events travel from the validate stage to the count stage.

Faust's per-message overhead (a future, a buffer, an ack) costs far more than
validating or counting an event, so the validate stage sends one message per
(batch, target partition) holding many events. The target partition is a
stable hash of event_id, so every copy of one event still meets in one
partition. An event inside a bundle is addressed by its *position*:
``offset * 2**16 + index``, which grows along the partition like an offset.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

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


def pack(events: Iterable[ServiceEvent], zone: ZoneInfo) -> Iterator[bytes]:
    """JSON arrays of event rows (:meth:`ServiceEvent.to_row` plus the local date in
    ``zone``), split to stay under the size limits.

    A bundle opens with ``{"zone": ...}``: counting, the stage everything waits
    for, then takes each event's local date as sent instead of converting every
    instant again, whenever its own zone is the same.
    """
    head = orjson.dumps({"zone": zone.key})
    chunk: list[bytes] = []
    size = len(head) + 3
    day_texts: dict[date, str] = {}  # a bundle spans few days: each written once
    for event in events:
        row = event.to_row()
        day = event.local_date(zone)
        text = day_texts.get(day)
        if text is None:
            text = day_texts[day] = day.isoformat()
        row.append(text)
        body = orjson.dumps(row)
        if chunk and (len(chunk) >= MAX_BUNDLE_EVENTS or size + len(body) + 1 > MAX_BUNDLE_BYTES):
            yield b"[" + head + b"," + b",".join(chunk) + b"]"
            chunk, size = [], len(head) + 3
        chunk.append(body)
        size += len(body) + 1
    if chunk:
        yield b"[" + head + b"," + b",".join(chunk) + b"]"


def unpack(raw: bytes, zone: ZoneInfo) -> list[ServiceEvent]:
    """The events of a bundle, in order (bundles written before the zone header, with
    nine-field rows, still read)."""
    data = orjson.loads(raw)
    if data and type(data[0]) is dict:
        same_zone = data[0].get("zone") == zone.key
        rows = data[1:]
    else:
        same_zone, rows = False, data
    if not same_zone:
        return [ServiceEvent.from_row(row[:9]) for row in rows]
    return [ServiceEvent.from_row(row[:9], (zone, _date(row[9]))) for row in rows]


@functools.lru_cache(maxsize=4096)
def _date(text: str) -> date:
    return date.fromisoformat(text)


def raw_timestamp_ms(headers: Any, fallback_ms: int) -> int:
    """The oldest raw message time a bundle carries, else the bundle's own time."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for key, value in items:
        if key == RAW_TIMESTAMP_HEADER and value and value.isdigit():
            return int(value)
    return int(fallback_ms)
