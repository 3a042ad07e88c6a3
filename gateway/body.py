"""A request body into the messages it carries, each with its exact bytes.

Three forms are accepted: one JSON object, a JSON array of objects
(``application/json``), or JSON Lines (``application/x-ndjson``, one event per
non-blank line). Every event keeps the bytes the terminal sent for it, so it is
validated exactly as the worker validates a Kafka message (:func:`schemas.events.parse_event`),
produced as sent, and dead-lettered with its original bytes when rejected.

What cannot be split into events (an unknown content type, a broken array, a body
that is not UTF-8 where the array needs text, several JSON values sent as
``application/json``) is a :class:`BodyProblem`: the whole
request is refused with a 4xx saying what was expected and what came.
"""

from __future__ import annotations

import json

from hallstats.errors import DataError

JSON = "application/json"
NDJSON = "application/x-ndjson"
ACCEPTED_TYPES = (JSON, NDJSON)
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark: some Windows tools put one in front


def _nothing(_: object) -> None:
    return None


# Finds where each value ends without building numbers or objects: a 5,000-digit
# integer or a NaN is the element's own problem (judged like the worker judges it),
# not the request's.
_DECODER = json.JSONDecoder(
    parse_int=_nothing, parse_float=_nothing, parse_constant=_nothing, object_pairs_hook=_nothing
)


class BodyProblem(DataError):
    """The request body as a whole is not understood (HTTP ``status``)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def media_type(header: str | None) -> str:
    """The request's media type, refused (415) unless JSON or JSON Lines in UTF-8."""
    if not header:
        raise BodyProblem(
            415,
            "unsupported_media_type",
            f"Content-Type: expected {JSON} or {NDJSON}, got no Content-Type header",
        )
    kind, _, params = header.partition(";")
    kind = kind.strip().lower()
    if kind not in ACCEPTED_TYPES:
        raise BodyProblem(
            415,
            "unsupported_media_type",
            f"Content-Type: expected {JSON} or {NDJSON}, got {header[:100]!r}",
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise BodyProblem(
                415,
                "unsupported_media_type",
                f"Content-Type charset: expected utf-8, got {value.strip()[:40]!r}",
            )
    return kind


def split(body: bytes, kind: str, max_events: int) -> list[bytes]:
    """The messages of a body of media type ``kind``, in order (at most ``max_events``)."""
    body = body.removeprefix(_BOM)  # framing, not part of the first event
    if kind == NDJSON:
        events = [line.rstrip(b"\r") for line in body.split(b"\n")]
        events = [line for line in events if line.strip(_WHITESPACE)]
    elif (stripped := body.strip(_WHITESPACE)).startswith(b"["):
        events = _array(stripped, max_events)
    else:
        _one_value(stripped)
        events = [stripped]
    if not events or events == [b""]:
        raise BodyProblem(
            400,
            "empty_body",
            "request body: expected at least one event (a JSON object, an array of them, "
            "or JSON Lines), got none",
        )
    if len(events) > max_events:
        raise _too_many(max_events)
    return events


def _too_many(max_events: int) -> BodyProblem:
    return BodyProblem(
        413,
        "too_many_events",
        f"request body: expected at most {max_events} events per request, got more; "
        "split them over several requests",
    )


def _one_value(body: bytes) -> None:
    """Refuse a JSON body that holds more than one value (JSON Lines sent as
    application/json): it is not one event to reject, but a framing mistake. A body
    that is not UTF-8 or not JSON at all is one message, judged like the worker's."""
    try:
        text = body.decode("utf-8")
        _value, end = _DECODER.raw_decode(text, 0)
    except (ValueError, RecursionError):
        return
    at = _skip(text, end)
    if at != len(text):
        line = text.count("\n", 0, at) + 1
        raise BodyProblem(
            400,
            "invalid_body",
            f"request body ({JSON}) at line {line}: expected one JSON value (an event, or "
            f"an array of events), got another value after the first; send JSON Lines as "
            f"{NDJSON}",
        )


def _array(body: bytes, max_events: int) -> list[bytes]:
    """Each element's exact text, found by decoding the array one value at a time."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyProblem(
            400,
            "invalid_body",
            f"request body: expected UTF-8 JSON, got byte 0x{body[exc.start]:02x} "
            f"at byte {exc.start}",
        ) from None
    events: list[bytes] = []
    at = _skip(text, 1)
    if at < len(text) and text[at] == "]":
        return events
    while True:
        try:
            _value, end = _DECODER.raw_decode(text, at)
        except RecursionError:  # nested too deeply to decode: the element's problem
            closed = _end_of_nested(text, at)
            if closed is None:
                raise _broken(text, at, "a JSON value (nested too deeply, never closed)") from None
            end = closed
        except ValueError as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise _broken(text, at, f"a JSON value ({detail})") from None
        events.append(text[at:end].encode("utf-8"))
        if len(events) > max_events:
            raise _too_many(max_events)
        at = _skip(text, end)
        if at < len(text) and text[at] == "]":
            if _skip(text, at + 1) != len(text):
                raise _broken(text, _skip(text, at + 1), "nothing after the closing ']'")
            return events
        if at >= len(text) or text[at] != ",":
            raise _broken(text, at, "',' or ']'")
        at = _skip(text, at + 1)


def _end_of_nested(text: str, at: int) -> int | None:
    """Where the array or object starting at ``at`` closes (brackets counted outside
    strings), or None when it does not."""
    depth = 0
    i, n = at, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0 and char not in " \t\r\n":
            return None
        i += 1
    return None


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _broken(text: str, at: int, expected: str) -> BodyProblem:
    got = repr(text[at : at + 20]) if at < len(text) else "the end of the body (truncated?)"
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    return BodyProblem(
        400,
        "invalid_body",
        f"request body (JSON array) at line {line} column {column}: expected {expected}, got {got}",
    )
