"""Largest-remainder apportionment: an integer total split exactly by weights.

Why one definition: the calibrated sample year (:mod:`terminals.sample_plan`) and the
test seed (``tests/support/seed.py``) both land on exact bulletin figures with it,
and two copies had already drifted apart on their edge cases.
"""

from __future__ import annotations

from collections.abc import Sequence

from hallstats.errors import DataError

__all__ = ["apportion"]


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights``, exactly: the parts sum to ``total``.

    Each part gets the integer part of its quota; the parts with the largest remainders
    get one more, the earlier part first on a tie. Weights summing to zero split evenly.
    A negative total, or a positive one over no weights, is a :class:`DataError`.
    """
    if total < 0:
        raise DataError(f"apportion: expected a non-negative total, got {total}")
    if not weights:
        if total:
            raise DataError(f"apportion: expected weights to split {total} over, got none")
        return []
    s = sum(weights)
    quotas = [total * w / s for w in weights] if s > 0 else [total / len(weights)] * len(weights)
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts
