"""The counter catalog: the one place that names event types, labels and units."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class EventType(StrEnum):
    """Every ``event_type`` the v1 contract accepts."""

    CONSULT = "consult"
    ACCEPT = "accept"
    ISSUE = "issue"
    TRANSFER = "transfer"
    HEARTBEAT = "heartbeat"  # liveness signal from a terminal; never counted


@dataclass(frozen=True)
class Counter:
    """How one counted type appears in the bulletin."""

    event_type: EventType
    label: str  # the verb used in the bulletin paragraph
    unit: str


#: Counted types in bulletin order (咨询、受理、颁发、流转).
CATALOG: Mapping[EventType, Counter] = MappingProxyType(
    {
        EventType.CONSULT: Counter(EventType.CONSULT, "咨询", "人次"),
        EventType.ACCEPT: Counter(EventType.ACCEPT, "受理", "件"),
        EventType.ISSUE: Counter(EventType.ISSUE, "颁发", "件"),
        EventType.TRANSFER: Counter(EventType.TRANSFER, "流转", "件次"),
    }
)

COUNTED_TYPES: tuple[EventType, ...] = tuple(CATALOG)


def is_counted(event_type: EventType) -> bool:
    return event_type in CATALOG
