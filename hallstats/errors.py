"""Project exceptions.

Two families are kept apart on purpose: an :class:`OperationalError` means a
service or the environment failed (retry, start it, fix the machine), a
:class:`DataError` means the input itself is wrong (reject it, keep it, tell
the sender). Messages say what was expected, what came, and where.
"""

from __future__ import annotations


class HallstatsError(Exception):
    """Base class of every error hallstats raises on purpose."""


class OperationalError(HallstatsError):
    """A service, tool or resource is missing, unreachable or too slow."""


class DataError(HallstatsError):
    """Input that breaks a contract: an event, a week name, a request."""


class NotFinalizedError(DataError):
    """A week was asked for that has no finalized version (yet)."""


class IntegrityError(HallstatsError):
    """Two independent counts of the same figures disagree; nothing is frozen."""
