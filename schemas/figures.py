"""Typed, immutable per-type figures (a week's or a year-to-date's counts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from hallstats.errors import DataError
from schemas.catalog import COUNTED_TYPES, EventType


@dataclass(frozen=True)
class TypeCounts:
    """One integer per counted type; field names are the ``event_type`` values."""

    consult: int = 0
    accept: int = 0
    issue: int = 0
    transfer: int = 0

    @classmethod
    def from_mapping(cls, counts: Mapping[str, int]) -> TypeCounts:
        unknown = set(counts) - {t.value for t in COUNTED_TYPES}
        if unknown:
            raise DataError(
                f"figures: expected keys among {[t.value for t in COUNTED_TYPES]}, "
                f"got unknown {sorted(unknown)}"
            )
        return cls(**{k: int(v) for k, v in counts.items()})

    def get(self, event_type: EventType) -> int:
        return int(getattr(self, event_type.value))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __add__(self, other: TypeCounts) -> TypeCounts:
        return TypeCounts(**{k: v + other.get(EventType(k)) for k, v in self.as_dict().items()})

    def __sub__(self, other: TypeCounts) -> TypeCounts:
        return TypeCounts(**{k: v - other.get(EventType(k)) for k, v in self.as_dict().items()})

    def total(self) -> int:
        return sum(self.as_dict().values())
