"""Per-terminal rate limit: a token bucket counted in events, not requests.

Each terminal may send ``rate`` events a second on average and up to ``burst`` at
once. A request is admitted when the bucket holds enough for it (or for a full
burst, so a request larger than the burst is possible after a quiet spell) and
then takes all its events, possibly running the bucket into debt that refills at
``rate``: the long-run rate holds whatever the request sizes. Refused requests
take nothing and learn when to come back (``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    level: float
    at: float


class TokenBuckets:
    """One bucket per key (a terminal), created full on first use."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[object, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: object, events: int) -> float:
        """Admit ``events`` for ``key`` and return 0, or refuse and return the seconds
        after which the same request would be admitted."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.level = min(float(self.burst), bucket.level + (now - bucket.at) * self.rate)
            bucket.at = now
            needed = float(min(events, self.burst))
            if bucket.level < needed:
                return (needed - bucket.level) / self.rate
            bucket.level -= events
            return 0.0

    def refund(self, key: object, events: int) -> None:
        """Give back what a request took when it failed on our side (Kafka down), so
        the terminal's re-send is not throttled for our outage."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.level = min(float(self.burst), bucket.level + events)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
