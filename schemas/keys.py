"""The raw topic's message key: one rule for every producer that writes it.

A terminal's events are keyed ``hall_id/window_id``, so one terminal's events stay
in one partition, in the order it sent them. Counting never depends on the key (the
worker routes by event_id); the key only keeps a terminal's stream together.
``hallstats emit`` and the HTTP gateway both call :func:`terminal_key`.
"""

from __future__ import annotations


def terminal_key(hall_id: str, window_id: str) -> bytes:
    """The Kafka key of an event from window ``window_id`` of hall ``hall_id``."""
    return f"{hall_id}/{window_id}".encode("utf-8", "backslashreplace")
