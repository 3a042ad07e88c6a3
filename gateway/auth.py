"""Terminal credentials: one bearer token per window terminal, only its hash kept.

``hallstats terminals add`` makes a random token, prints it once and stores its
SHA-256 (table ``terminal_tokens``, :mod:`schemas.ddl`) with the hall and window it
speaks for. The gateway looks every request's token up in ClickHouse, with no
cache, so a revocation (a newer row for the same hash) is refused from the next
request on. A token never appears in a log line, an error message or a metric.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hallstats.clickhouse import ClientPool, execute
from hallstats.errors import DataError
from hallstats.settings import Settings
from schemas.events import MAX_NAME_CHARS

TOKEN_PREFIX = "hst_"


@dataclass(frozen=True)
class Terminal:
    """The window terminal a token was issued to: the only one it may report for."""

    hall_id: str
    window_id: str


@dataclass(frozen=True)
class Credential:
    """One issued token as ``terminals list`` shows it (never the token itself)."""

    hall_id: str
    window_id: str
    hash_prefix: str
    issued_at: datetime
    revoked: bool
    changed_at: datetime


def new_token() -> str:
    """A fresh random token (256 bits), recognisable by its prefix in a config file."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_terminal_name(field: str, value: str) -> str:
    """Hall and window names follow the event contract's name rule."""
    if not value or len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise DataError(
            f"{field}: expected 1 to {MAX_NAME_CHARS} printable characters "
            f"(as in the events' {field}), got {value!r}"
        )
    return value


class TokenStore:
    """Issue, revoke, list and look up tokens in ClickHouse (thread-safe: a small pool
    of connections, since a clickhouse-driver Client is not)."""

    def __init__(self, settings: Settings, keep: int = 32) -> None:
        self._settings = settings
        self._table = f"{settings.clickhouse_database}.terminal_tokens"
        self._pool = ClientPool(settings, keep)

    def close(self) -> None:
        self._pool.close()

    def lookup(self, token: str) -> Terminal | None:
        """The terminal of a current (issued, not revoked) token, else None."""
        with self._pool.client() as client:
            rows = execute(
                client,
                f"SELECT hall_id, window_id, revoked FROM {self._table} "
                "WHERE token_hash = %(h)s ORDER BY version DESC LIMIT 1",
                {"h": token_hash(token)},
                settings=self._settings,
            )
        if not rows or rows[0][2]:
            return None
        return Terminal(str(rows[0][0]), str(rows[0][1]))

    def add(self, hall_id: str, window_id: str) -> str:
        """Issue a new token for the terminal and return it (the only time it is seen).
        Earlier tokens of the terminal stay valid until revoked (rotation without a gap)."""
        check_terminal_name("hall_id", hall_id)
        check_terminal_name("window_id", window_id)
        token = new_token()
        now = datetime.now(UTC).replace(microsecond=0)
        row = (token_hash(token), hall_id, window_id, now, 0, now, time.time_ns())
        self._insert([row])
        return token

    def revoke(self, hall_id: str, window_id: str) -> int:
        """Revoke every current token of the terminal; how many were revoked."""
        current = [c for c in self._current(hall_id, window_id) if not c[3]]
        now = datetime.now(UTC).replace(microsecond=0)
        rows = [
            (digest, hall_id, window_id, issued, 1, now, max(time.time_ns(), version + 1))
            for digest, issued, version, _revoked in current
        ]
        self._insert(rows)
        return len(rows)

    def credentials(self) -> list[Credential]:
        with self._pool.client() as client:
            rows = execute(
                client,
                "SELECT argMax(hall_id, version), argMax(window_id, version), token_hash, "
                "argMax(issued_at, version), argMax(revoked, version), "
                f"argMax(changed_at, version) FROM {self._table} GROUP BY token_hash",
                settings=self._settings,
            )
        found = [
            Credential(
                hall_id=str(hall),
                window_id=str(window),
                hash_prefix=str(digest)[:12],
                issued_at=issued.replace(tzinfo=UTC),
                revoked=bool(revoked),
                changed_at=changed.replace(tzinfo=UTC),
            )
            for hall, window, digest, issued, revoked, changed in rows
        ]
        return sorted(found, key=lambda c: (c.hall_id, c.window_id, c.issued_at, c.hash_prefix))

    def _current(self, hall_id: str, window_id: str) -> list[tuple[str, datetime, int, int]]:
        with self._pool.client() as client:
            rows = execute(
                client,
                f"SELECT token_hash, argMax(issued_at, version), max(version), "
                f"argMax(revoked, version) FROM {self._table} "
                "WHERE hall_id = %(hall)s AND window_id = %(window)s GROUP BY token_hash",
                {"hall": hall_id, "window": window_id},
                settings=self._settings,
            )
        return [(str(d), i.replace(tzinfo=UTC), int(v), int(r)) for d, i, v, r in rows]

    def _insert(self, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._pool.client() as client:
            execute(
                client,
                f"INSERT INTO {self._table} "
                "(token_hash, hall_id, window_id, issued_at, revoked, changed_at, version) VALUES",
                rows,
                settings=self._settings,
            )
