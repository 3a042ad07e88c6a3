"""``POST /v1/events``: authenticate, split, validate, authorise, produce, answer.

The order is the contract's: a request is refused as a whole (401, 415, 413, 400,
429, 403, 503) before anything of it is produced, or answered event by event (202,
or 422 when every event was rejected) after Kafka acknowledged all of its messages:
the valid events on the input topic, the rejected ones on the DLQ with their
original bytes (the same record the worker writes, source ``http:gateway``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from gateway import body
from gateway.auth import Terminal, TokenStore
from gateway.errors import GatewayProblem, unauthorized
from gateway.limits import TokenBuckets, retry_after
from gateway.metrics import GatewayMetrics
from gateway.models import EventResult, Results
from gateway.producer import AckProducer, KafkaNotAcknowledged, KafkaRefused, Outgoing
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.dlq import SourcePosition, dead_letter
from schemas.events import ServiceEvent, parse_event
from schemas.keys import terminal_key
from schemas.rejections import EventRejected

log = logging.getLogger(__name__)

SOURCE = "http:gateway"  # the DLQ record's source topic for events rejected here
_MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class _Checked:
    raw: bytes
    event: ServiceEvent | None
    rejection: EventRejected | None


class Ingest:
    """The state one ``POST /v1/events`` needs, shared by all requests of an app."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenStore,
        producer: AckProducer,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.producer = producer
        self.metrics = metrics
        self.buckets = TokenBuckets(settings.gateway_rate_per_second, settings.gateway_burst)

    async def handle(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            response = await self._handle(request)
        except GatewayProblem as problem:
            response = problem.response()
        except KafkaRefused as exc:  # permanent: a 503 would be retried forever
            log.error("gateway: %s", exc)
            response = GatewayProblem.refused(exc).response()
        except OperationalError as exc:  # ClickHouse (tokens) or Kafka unavailable
            response = GatewayProblem.unavailable(exc).response()
        self.metrics.answered(response.status_code, time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> JSONResponse:
        terminal = await self._authenticate(request.headers.get("authorization"))
        try:
            kind = body.media_type(request.headers.get("content-type"))
            raw = await self._read(request)
            messages = body.split(raw, kind, self.settings.gateway_max_events)
        except body.BodyProblem as problem:
            raise GatewayProblem.from_body(problem) from None

        wait = self.buckets.take(terminal, len(messages))
        if wait:
            raise GatewayProblem(
                429,
                "rate_limited",
                f"terminal {terminal.hall_id}/{terminal.window_id}: expected at most "
                f"{self.settings.gateway_rate_per_second:g} events/s (bursts up to "
                f"{self.settings.gateway_burst}), got {len(messages)} events now; "
                f"retry in {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait)},
            )

        now = datetime.now(UTC)
        checked = [self._check(message, now) for message in messages]
        self._authorise(terminal, checked)

        key = terminal_key(terminal.hall_id, terminal.window_id)
        source = SourcePosition(SOURCE, -1, -1, int(now.timestamp() * 1000))
        outgoing = [
            Outgoing(self.settings.topic, c.raw, key)
            if c.rejection is None
            else Outgoing(
                self.settings.dlq_topic,
                dead_letter(c.rejection.as_dict(), c.raw, source, key, now),
                key,
                (("reason", c.rejection.reason.value.encode()),),
            )
            for c in checked
        ]
        try:
            acked = await self.producer.send(outgoing, self.settings.gateway_ack_timeout_seconds)
        except KafkaNotAcknowledged:
            self.buckets.refund(terminal, len(messages))
            raise
        self.metrics.ack_seconds.observe(acked)
        return self._answer(checked)

    async def _authenticate(self, header: str | None) -> Terminal:
        expected = "expected header 'Authorization: Bearer <terminal token>'"
        if not header:
            raise unauthorized(f"{expected}, got no Authorization header")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized(f"{expected}, got {_scheme_shown(scheme, token)}")
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
            raise unauthorized(f"{expected}: the token is not one hallstats issued")
        terminal = await run_in_threadpool(self.tokens.lookup, token)
        if terminal is None:
            raise unauthorized(
                "the bearer token is unknown or revoked; ask the operator for a new one "
                "(`hallstats terminals add --hall H --window W`)"
            )
        return terminal

    async def _read(self, request: Request) -> bytes:
        limit = self.settings.gateway_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, f"Content-Length {declared}")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit, f"more than {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise body.BodyProblem(
                400,
                "incomplete_body",
                f"request body: expected {declared or 'all the'} bytes, the client "
                f"disconnected after {size}",
            ) from None
        return b"".join(chunks)

    def _check(self, raw: bytes, now: datetime) -> _Checked:
        try:
            event = parse_event(raw, max_bytes=self.settings.max_message_bytes, now=now)
        except EventRejected as rejection:
            return _Checked(raw, None, rejection)
        return _Checked(raw, event, None)

    def _authorise(self, terminal: Terminal, checked: list[_Checked]) -> None:
        """403 when any event (valid or not) names another terminal: a rejected event
        is dead-lettered and may be replayed later, so it must not speak for another
        hall either."""
        for index, c in enumerate(checked):
            claim = (c.event.hall_id, c.event.window_id) if c.event is not None else _claim(c.raw)
            for field, claimed, own in zip(
                ("hall_id", "window_id"), claim, (terminal.hall_id, terminal.window_id), strict=True
            ):
                if isinstance(claimed, str) and claimed != own:
                    raise GatewayProblem(
                        403,
                        "forbidden",
                        f"event {index}: {field}: expected {own!r} (the terminal this token "
                        f"was issued to), got {claimed[:80]!r}; nothing of this request "
                        "was taken",
                        field=field,
                    )

    def _answer(self, checked: list[_Checked]) -> JSONResponse:
        results: list[EventResult] = []
        for index, c in enumerate(checked):
            if c.event is not None:
                results.append(
                    EventResult(index=index, status="accepted", event_id=c.event.event_id)
                )
                continue
            assert c.rejection is not None
            results.append(
                EventResult(
                    index=index,
                    status="rejected",
                    event_id=_event_id(c.raw),
                    **c.rejection.as_dict(),
                )
            )
            self.metrics.rejected.labels(c.rejection.reason.value).inc()
        accepted = sum(1 for c in checked if c.event is not None)
        self.metrics.events.labels("accepted").inc(accepted)
        self.metrics.events.labels("rejected").inc(len(checked) - accepted)
        status = 202 if accepted else 422
        content = Results(results=results).model_dump(exclude_none=True)
        return JSONResponse(content, status_code=status)


#: Authorization schemes an answer may name (IANA's registry, lower-case). Anything
#: else may be part of a token pasted wrongly, so it is never echoed.
_KNOWN_SCHEMES = frozenset(
    {"basic", "bearer", "digest", "dpop", "hoba", "mutual", "negotiate", "ntlm", "token"}
)


def _scheme_shown(scheme: str, rest: str) -> str:
    """The scheme of a refused Authorization header as the answer may show it: only a
    registered scheme word is echoed; a header with no scheme (the token alone), or
    any other first word, is "no scheme" or "an unknown scheme", never its text."""
    if scheme.lower() == "bearer":
        return "'Bearer' without a token"
    if not rest:
        return "no scheme"
    if scheme.lower() in _KNOWN_SCHEMES:
        return f"scheme {scheme!r}"
    return "an unknown scheme"


def _too_large(limit: int, got: str) -> GatewayProblem:
    return GatewayProblem(
        413,
        "body_too_large",
        f"request body: expected at most {limit} bytes, got {got}; split the events over "
        "several requests",
    )


def _loose(raw: bytes) -> Any:
    """The message decoded as well as it can be (None when it cannot)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _claim(raw: bytes) -> tuple[Any, Any]:
    data = _loose(raw)
    if not isinstance(data, dict):
        return None, None
    return data.get("hall_id"), data.get("window_id")


def _event_id(raw: bytes) -> str | None:
    data = _loose(raw)
    value = data.get("event_id") if isinstance(data, dict) else None
    if isinstance(value, str) and len(value) <= 64 and value.isprintable():
        return value.lower()
    return None
