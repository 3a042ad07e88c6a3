"""Drain a terminal's spool to the gateway's ``POST /v1/events``.

The rule that makes it safe: an event leaves the spool only when the gateway
answered for it, ``accepted`` or ``rejected``, in a 202 or 422 body (one result per
event, in order). Anything else (a timeout, a dropped connection, a 5xx, a 429)
leaves the whole batch pending, to be sent again later with the same event_ids,
which the pipeline counts once. An accepted event is deleted before the next
request is built, so it is never sent again.

Retries: exponential backoff with jitter on network errors, timeouts and 5xx (so a
hall's terminals coming back together do not hit the gateway in step); the
gateway's ``Retry-After`` on 429 and 503. 401 and 403 stop the sender: a revoked
token or a terminal configured for another window will not heal by retrying, and
an operator must be told. Only the standard library (http.client), so a front-desk
system needs nothing beyond Python.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from hallstats.errors import DataError
from terminals.spool import Spool, Spooled, Verdict

MAX_EVENTS = 1000  # the gateway's per-request limits
MAX_BODY_BYTES = 1_000_000  # under the gateway's 1 MiB, leaving room for separators
MAX_RETRY_AFTER = 300.0  # a Retry-After beyond this is read as this

# Why drain() returned.
DRAINED = "drained"  # nothing pending
STOPPED = "stopped"  # the caller's stop event
DEADLINE = "deadline"  # the caller's time limit
UNAUTHORIZED = "unauthorized"  # 401: missing, unknown or revoked token
FORBIDDEN = "forbidden"  # 403: the token belongs to another hall/window
REFUSED = "refused"  # another 4xx, or an answer that does not match the batch
FATAL = frozenset({UNAUTHORIZED, FORBIDDEN, REFUSED})
ERROR = "error"  # an unexpected exception (the spool, a hook): retried after backoff


def check_token(token: str) -> str:
    """The token without surrounding whitespace (a copied line's newline), or a
    :class:`DataError` when it holds a control character, a space or non-ASCII
    (the message never shows the token: it is a credential)."""
    token = token.strip()
    if not token:
        raise DataError(
            "terminal token: expected the token `hallstats terminals add` printed, got none"
        )
    for at, char in enumerate(token):
        if not (char.isascii() and char.isprintable()) or char.isspace():
            kind = (
                "a control character"
                if not char.isprintable()
                else "a space or non-ASCII character"
            )
            raise DataError(
                f"terminal token: expected printable ASCII (as `hallstats terminals add` "
                f"prints it), got {kind} (code point {ord(char)}) at position {at} of "
                f"{len(token)}; copy the token's line again"
            )
    return token


@dataclass
class DrainReport:
    """What one drain did; ``stop`` says why it returned (see the constants above)."""

    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    retries: int = 0
    network_errors: int = 0  # requests whose fate is unknown (timeout, dropped connection)
    stop: str = DRAINED
    detail: str = ""
    pending: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": between half and all of base * 2^(n-1)."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return float(ceiling * rng.uniform(0.5, 1.0))


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes


# What the transport may raise while the request's fate is unknown.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, TimeoutError)

RequestHook = Callable[[int, int, float], None]  # (status or 0 on a network error, events, s)


class Sender:
    """Sends the spool's pending events in batches; one HTTP connection, kept alive."""

    def __init__(
        self,
        spool: Spool,
        gateway_url: str,
        token: str,
        *,
        batch_size: int = MAX_EVENTS,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_request: RequestHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(gateway_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DataError(f"gateway URL: expected http(s)://host[:port], got {gateway_url!r}")
        self.spool = spool
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/v1/events"
        self._token = check_token(token)
        self.batch_size = max(1, min(batch_size, MAX_EVENTS))
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self._ssl = ssl_context
        self._on_request = on_request
        self._rng = rng or random.Random()
        self._conn: http.client.HTTPConnection | None = None

    def redact(self, text: str) -> str:
        """``text`` with the token blanked out (for errors shown or logged)."""
        return text.replace(self._token, "[token]")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def drain(
        self, *, stop: threading.Event | None = None, deadline: float | None = None
    ) -> DrainReport:
        """Send until nothing is pending, the gateway refuses for good, ``stop`` is set
        or ``deadline`` (time.monotonic()) passes; whatever was not answered stays."""
        report = DrainReport()
        failures = 0
        while True:
            if stop is not None and stop.is_set():
                report.stop = STOPPED
                break
            if deadline is not None and time.monotonic() >= deadline:
                report.stop = DEADLINE
                break
            batch = self.spool.next_batch(self.batch_size, MAX_BODY_BYTES)
            if not batch:
                report.stop = DRAINED
                break
            wait = self._attempt(batch, report)
            if report.stop in FATAL:
                break
            if wait is None:
                failures = 0
                continue
            failures += 1
            report.retries += 1
            delay = wait if wait > 0 else self.backoff.delay(failures, self._rng)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        report.pending = self.spool.counts().pending
        return report

    def _attempt(self, batch: list[Spooled], report: DrainReport) -> float | None:
        """One request. None: answered and settled, go on; otherwise the wait before the
        next attempt (0: use the backoff). A fatal answer sets ``report.stop``."""
        body = ("[" + ",".join(s.body for s in batch) + "]").encode()
        started = time.monotonic()
        try:
            reply = self._post(body)
        except _NETWORK_ERRORS:
            self.close()  # the connection's state is unknown: start a fresh one
            report.network_errors += 1
            self._hook(0, len(batch), time.monotonic() - started)
            return 0.0
        self._hook(reply.status, len(batch), time.monotonic() - started)
        report.requests += 1
        report.statuses[reply.status] = report.statuses.get(reply.status, 0) + 1
        status = reply.status
        if status in (202, 422):
            verdicts = self._verdicts(batch, reply)
            if verdicts is None:
                report.stop = REFUSED
                report.detail = f"{status} answer does not match the batch: {_excerpt(reply)}"
                return None
            self.spool.settle(verdicts)
            accepted = sum(v.accepted for v in verdicts)
            report.accepted += accepted
            report.rejected += len(verdicts) - accepted
            return None
        if status in (429, 503):
            return _retry_after(reply.headers.get("retry-after"))
        if status == 413 and self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)  # the gateway's limit is lower
            return None
        if status >= 500 or status == 408:
            return 0.0
        report.stop = {401: UNAUTHORIZED, 403: FORBIDDEN}.get(status, REFUSED)
        report.detail = f"gateway answered {status}: {_excerpt(reply)}"
        return None

    def _post(self, body: bytes) -> _Reply:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._ssl
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        self._conn.request(
            "POST",
            self._path,
            body=body,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        response = self._conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        if response.will_close:
            self.close()
        return _Reply(response.status, headers, data)

    def _hook(self, status: int, events: int, seconds: float) -> None:
        if self._on_request is not None:
            self._on_request(status, events, seconds)

    @staticmethod
    def _verdicts(batch: list[Spooled], reply: _Reply) -> list[Verdict] | None:
        """One verdict per spooled event, by position; None when the answer does not
        fit the batch (then nothing is settled: better resend than lose)."""
        try:
            results: Any = json.loads(reply.body)["results"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(results, list) or len(results) != len(batch):
            return None
        verdicts: list[Verdict] = []
        for spooled, result in zip(batch, results, strict=True):
            if not isinstance(result, dict):
                return None
            if result.get("event_id") not in (None, spooled.event_id):
                return None
            if result.get("status") == "accepted":
                verdicts.append(Verdict(spooled.seq, accepted=True))
            elif result.get("status") == "rejected":
                verdicts.append(
                    Verdict(
                        spooled.seq,
                        accepted=False,
                        reason=str(result.get("reason") or "rejected"),
                        field=result.get("field"),
                        message=str(result.get("message") or ""),
                    )
                )
            else:
                return None
        return verdicts


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), stretched
    by up to 20% so that terminals told the same do not return together; 0 (use the
    backoff) if absent or not in the future: a ``Retry-After: 0`` must not make a
    terminal retry at once, over and over."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    if not seconds > 0:  # 0, negative, a date past, NaN: no advice, use the backoff
        return 0.0
    seconds = min(seconds, MAX_RETRY_AFTER)
    return seconds * random.uniform(1.0, 1.2)


def _excerpt(reply: _Reply) -> str:
    return reply.body[:300].decode("utf-8", errors="replace")
