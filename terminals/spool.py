"""The terminal's durable spool: every recorded event lives here until the gateway answers.

A front-desk machine loses power, the office network drops, the gateway restarts:
an event the clerk recorded must survive all of that, so it is committed to a
local SQLite file (WAL, ``synchronous=FULL``: on disk when ``add`` returns) before
the client hands back its event_id. An event leaves the spool only when the
gateway accepted it; a rejected one stays, with the gateway's reason, field and
message, for the operator to look at. Everything else (timeouts, 5xx, a dead
connection) leaves it pending, to be sent again under the same event_id, which
the pipeline counts once.

One connection guarded by a lock serves the threads of one process (recording and
the sender); SQLite's own locking (``busy_timeout``) serves a second process, e.g.
a sender run beside the front-desk application.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hallstats.errors import DataError, OperationalError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'rejected')),
    reason TEXT,
    field TEXT,
    message TEXT,
    answered_at TEXT
);
CREATE INDEX IF NOT EXISTS spool_by_state ON spool (state, seq);
CREATE TABLE IF NOT EXISTS tally (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Spooled:
    """A pending event as it will be sent: the exact bytes recorded, never re-encoded."""

    seq: int
    event_id: str
    body: str


@dataclass(frozen=True)
class Rejection:
    """An event the gateway refused, kept for the operator."""

    event_id: str
    body: str
    reason: str
    field: str | None
    message: str
    recorded_at: str
    answered_at: str


@dataclass(frozen=True)
class Verdict:
    """The gateway's answer for one spooled event: accepted, or rejected with why."""

    seq: int
    accepted: bool
    reason: str = ""
    field: str | None = None
    message: str = ""


@dataclass(frozen=True)
class SpoolCounts:
    pending: int
    rejected: int
    accepted: int  # accepted over the spool's life (the rows themselves are deleted)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Spool:
    """A SQLite file of pending and rejected events; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise OperationalError(f"spool {self.path}: cannot open SQLite file: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, event_id: str, body: str) -> None:
        """Append one event; committed (fsynced) when this returns."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO spool (event_id, body, recorded_at) VALUES (?, ?, ?)",
                    (event_id, body, _now()),
                )
            except sqlite3.IntegrityError as exc:
                raise DataError(f"spool {self.path}: event_id {event_id} already spooled") from exc

    def next_batch(self, limit: int, max_bytes: int) -> list[Spooled]:
        """The oldest pending events, at most ``limit`` and about ``max_bytes`` of bodies
        (always at least one, whatever its size: the gateway decides about that one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, body FROM spool WHERE state = 'pending' "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        batch: list[Spooled] = []
        size = 2
        for seq, event_id, body in rows:
            size += len(body.encode()) + 1
            if batch and size > max_bytes:
                break
            batch.append(Spooled(int(seq), str(event_id), str(body)))
        return batch

    def settle(self, verdicts: Sequence[Verdict]) -> None:
        """Apply the gateway's answers in one transaction: accepted rows are deleted
        (and tallied, those actually deleted only: a second sender on the same spool
        may have settled some already), rejected rows are kept with the reason."""
        accepted = [(v.seq,) for v in verdicts if v.accepted]
        rejected = [
            (v.reason, v.field, v.message, _now(), v.seq) for v in verdicts if not v.accepted
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                deleted = self._db.executemany(
                    "DELETE FROM spool WHERE seq = ? AND state = 'pending'", accepted
                ).rowcount
                self._db.executemany(
                    "UPDATE spool SET state = 'rejected', reason = ?, field = ?, message = ?, "
                    "answered_at = ? WHERE seq = ? AND state = 'pending'",
                    rejected,
                )
                self._db.execute(
                    "INSERT INTO tally (name, value) VALUES ('accepted', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (max(0, deleted),),  # rows another sender settled already are not new
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def counts(self) -> SpoolCounts:
        with self._lock:
            states = dict(
                self._db.execute("SELECT state, count(*) FROM spool GROUP BY state").fetchall()
            )
            row = self._db.execute("SELECT value FROM tally WHERE name = 'accepted'").fetchone()
        return SpoolCounts(
            pending=int(states.get("pending", 0)),
            rejected=int(states.get("rejected", 0)),
            accepted=int(row[0]) if row else 0,
        )

    def rejections(self) -> list[Rejection]:
        """The rejected events, oldest first, for the operator to fix or forget."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, body, reason, field, message, recorded_at, answered_at "
                "FROM spool WHERE state = 'rejected' ORDER BY seq"
            ).fetchall()
        return [Rejection(*row) for row in rows]

    def forget_rejected(self, event_ids: Iterable[str]) -> int:
        """Drop rejections the operator has dealt with; pending events are never touched."""
        with self._lock:
            cursor = self._db.executemany(
                "DELETE FROM spool WHERE event_id = ? AND state = 'rejected'",
                [(event_id,) for event_id in event_ids],
            )
            return int(cursor.rowcount)
