"""The offline-safe client against a real HTTP server on loopback that it cannot trust.

The promises checked everywhere: an event leaves the spool only when the gateway
answered for it (accepted, or rejected and kept with its reason); an event whose
acceptance reached the client is never sent again; everything else is retried.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from schemas.rejections import EventRejected
from terminals.client import TerminalClient
from terminals.sender import (
    DRAINED,
    ERROR,
    FORBIDDEN,
    REFUSED,
    UNAUTHORIZED,
    Backoff,
    Sender,
)
from terminals.sim import SimReport
from terminals.spool import Spool, Spooled, Verdict
from tests.support.scripted_gateway import (
    ACCEPT,
    ACCEPT_THEN_DROP,
    DROP,
    ScriptedGateway,
    Step,
    scripted_gateway,
    status,
)

FAST = Backoff(base=0.01, cap=0.05)
TOKEN = "t0ken-for-tests"


def client(gw: ScriptedGateway, tmp_path: Path, **kwargs: object) -> TerminalClient:
    return TerminalClient(
        gw.url, TOKEN, tmp_path / "spool.sqlite", "hall-a", "W01", backoff=FAST, **kwargs
    )  # type: ignore[arg-type]


def record(c: TerminalClient, n: int) -> list[str]:
    types = ["consult", "accept", "issue", "transfer"]
    return [c.record(types[i % 4], department="民政厅", item_code=f"MZ-{i}") for i in range(n)]


def assert_promises(gw: ScriptedGateway, created: list[str]) -> None:
    assert not gw.seen.resent_after_delivery, "an event was sent again after its acceptance"
    assert set(gw.seen.produced) == set(created), "every created event reached the gateway"


def test_record_validates_and_commits_before_returning(tmp_path: Path) -> None:
    with scripted_gateway([]) as gw:
        c = client(gw, tmp_path)
        event_id = c.record("accept", department="民政厅", case_id="C-1")
        assert uuid.UUID(event_id).version == 4
        with pytest.raises(EventRejected) as naive:
            c.record("accept", department="民政厅", occurred_at=datetime(2024, 12, 9, 9, 30))  # noqa: DTZ001
        assert naive.value.reason.value == "naive_timestamp"
        with pytest.raises(EventRejected):
            c.record("fax", department="民政厅")
        # Another connection (another process would do the same) sees it committed.
        with Spool(tmp_path / "spool.sqlite") as other:
            assert other.counts().pending == 1
            (pending,) = other.next_batch(10, 10_000)
            assert pending.event_id == event_id
        c.close()


def test_spooled_events_survive_a_killed_process(tmp_path: Path) -> None:
    """record() returned, then the process died without closing anything."""
    spool = tmp_path / "spool.sqlite"
    code = (
        "import os; from terminals.client import TerminalClient\n"
        f"c = TerminalClient('http://127.0.0.1:9', 'x', {str(spool)!r}, 'hall-a', 'W01')\n"
        "ids = [c.record('consult', department='民政厅') for _ in range(25)]\n"
        "print(' '.join(ids), flush=True); os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    ids = out.stdout.split()
    with Spool(spool) as reopened:
        assert [s.event_id for s in reopened.next_batch(100, 1 << 20)] == ids


def test_drains_in_batches_of_at_most_1000_with_the_bearer_token(tmp_path: Path) -> None:
    with scripted_gateway([]) as gw:
        c = client(gw, tmp_path)
        created = record(c, 2500)
        report = c.flush(timeout=60)
        assert report.stop == DRAINED and report.accepted == 2500
        assert [len(r) for r in gw.seen.requests] == [1000, 1000, 500]
        assert set(gw.seen.auth) == {f"Bearer {TOKEN}"}
        assert c.counts().pending == 0 and c.counts().accepted == 2500
        assert_promises(gw, created)
        c.close()


def test_rejections_are_kept_with_their_reason_and_not_resent(tmp_path: Path) -> None:
    with scripted_gateway([Step("accept", reject=frozenset({1, 3})), Step("accept")]) as gw:
        c = client(gw, tmp_path, batch_size=5)
        created = record(c, 10)
        report = c.flush(timeout=30)
        assert (report.accepted, report.rejected, report.requests) == (8, 2, 2)
        assert report.statuses == {202: 2}
        kept = c.rejections()
        assert [r.event_id for r in kept] == [created[1], created[3]]
        assert kept[0].reason == "invalid_value" and kept[0].field == "department"
        assert kept[0].message and created[1] in kept[0].body
        assert c.counts().pending == 0 and c.counts().rejected == 2
        assert c.flush(timeout=5).requests == 0  # nothing left to send
        assert c.spool.forget_rejected([created[1]]) == 1
        assert c.counts().rejected == 1
        c.close()


def test_422_all_rejected(tmp_path: Path) -> None:
    with scripted_gateway([Step("accept", reject=frozenset(range(3)))]) as gw:
        c = client(gw, tmp_path)
        record(c, 3)
        report = c.flush(timeout=10)
        assert report.statuses == {422: 1} and report.rejected == 3
        assert c.counts().rejected == 3 and c.counts().pending == 0
        c.close()


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(tmp_path: Path, code: int) -> None:
    with scripted_gateway([status(code, "1"), ACCEPT]) as gw:
        c = client(gw, tmp_path)
        created = record(c, 20)
        report = c.flush(timeout=30)
        assert report.stop == DRAINED and report.accepted == 20 and report.retries == 1
        waited = gw.seen.times[1] - gw.seen.times[0]
        assert 1.0 <= waited < 2.0, waited
        assert gw.seen.requests[0] == gw.seen.requests[1] == created
        c.close()


def test_server_errors_back_off_exponentially_then_deliver(tmp_path: Path) -> None:
    script = [status(500), status(502), status(503), status(504), ACCEPT]
    with scripted_gateway(script) as gw:
        c = TerminalClient(
            gw.url, TOKEN, tmp_path / "s.sqlite", "hall-a", "W01", backoff=Backoff(0.1, 1.0)
        )
        created = record(c, 7)
        report = c.flush(timeout=30)
        assert report.accepted == 7 and report.retries == 4
        gaps = [b - a for a, b in zip(gw.seen.times, gw.seen.times[1:], strict=False)]
        # equal jitter: between half and all of 0.1, 0.2, 0.4, 0.8 s
        for gap, ceiling in zip(gaps, [0.1, 0.2, 0.4, 0.8], strict=True):
            assert ceiling / 2 <= gap < ceiling + 0.3, gaps
        assert_promises(gw, created)
        c.close()


def test_dropped_connections_and_lost_answers_are_resent(tmp_path: Path) -> None:
    """The gateway produced the events but died before answering: the client cannot know,
    so it sends them again (the pipeline counts once); never after a delivered answer."""
    with scripted_gateway([DROP, ACCEPT_THEN_DROP, DROP, ACCEPT]) as gw:
        c = client(gw, tmp_path)
        created = record(c, 30)
        report = c.flush(timeout=30)
        assert report.accepted == 30 and report.network_errors == 3
        assert gw.seen.requests == [created] * 4
        assert gw.seen.produced == created * 2  # produced twice, counted once downstream
        assert_promises(gw, created)
        c.close()


def test_a_timeout_leaves_the_batch_pending(tmp_path: Path) -> None:
    with scripted_gateway([Step("sleep", seconds=1.5), ACCEPT]) as gw:
        c = client(gw, tmp_path, timeout=0.5)
        created = record(c, 5)
        report = c.flush(timeout=30)
        assert report.accepted == 5 and report.network_errors == 1
        assert gw.seen.requests == [created, created]
        c.close()


@pytest.mark.parametrize(("code", "stop"), [(401, UNAUTHORIZED), (403, FORBIDDEN), (400, REFUSED)])
def test_refusals_stop_the_sender_and_keep_everything(tmp_path: Path, code: int, stop: str) -> None:
    with scripted_gateway([status(code)]) as gw:
        c = client(gw, tmp_path)
        record(c, 12)
        report = c.flush(timeout=10)
        assert report.stop == stop and str(code) in report.detail
        assert len(gw.seen.requests) == 1
        assert c.counts().pending == 12 and c.counts().accepted == 0
        c.close()


def test_an_answer_that_does_not_fit_the_batch_settles_nothing(tmp_path: Path) -> None:
    with scripted_gateway([]) as gw:
        spool = Spool(tmp_path / "s.sqlite")
        for _ in range(3):
            event_id = str(uuid.uuid4())
            spool.add(event_id, f'{{"event_id": "{event_id}"}}')
        sender = Sender(spool, gw.url, TOKEN, backoff=FAST)
        gw.script.append(Step("accept"))

        def short(batch: object, reply: object) -> None:
            return None  # as if the results did not match

        sender._verdicts = short  # type: ignore[assignment,method-assign]
        report = sender.drain(deadline=time.monotonic() + 10)
        assert report.stop == REFUSED and spool.counts().pending == 3
        spool.close()


def test_background_sender_through_random_faults(tmp_path: Path) -> None:
    """Recording goes on while the gateway fails at random; closing drains everything."""
    rng = random.Random(10)
    menu = [ACCEPT, ACCEPT, DROP, ACCEPT_THEN_DROP, status(503, "0"), status(500), status(429)]
    script = [rng.choice(menu) for _ in range(60)]
    script += [Step("accept", reject=frozenset({0}))]
    with scripted_gateway(script) as gw:
        c = client(gw, tmp_path, batch_size=40)
        c.start()
        created = []
        for _ in range(20):
            created += record(c, 15)
            time.sleep(0.01)
        counts = c.close(drain_timeout=60)
        assert counts.pending == 0
        assert counts.accepted + counts.rejected == len(created) == 300
        assert not gw.seen.resent_after_delivery
        with Spool(tmp_path / "spool.sqlite") as spool:
            rejected = {r.event_id for r in spool.rejections()}
        assert set(gw.seen.produced) | rejected == set(created)
        assert not set(gw.seen.produced) & rejected


def test_bad_gateway_url_is_refused(tmp_path: Path) -> None:
    from hallstats.errors import DataError

    with pytest.raises(DataError):
        TerminalClient("ftp://x", TOKEN, tmp_path / "s.sqlite", "hall-a", "W01")


@pytest.mark.parametrize("record_first", [False, True], ids=["live", "record-first"])
def test_simulated_terminals_deliver_everything_they_created(
    tmp_path: Path, record_first: bool
) -> None:
    from schemas.calendar import IsoWeek
    from terminals.sim import SimTerminal, run_terminals

    week = IsoWeek.parse("2024-W50")
    fleet = [SimTerminal("hall-sim", f"W{i:02d}", f"token-{i}") for i in range(6)]
    with scripted_gateway([status(503, "0"), DROP, ACCEPT_THEN_DROP]) as gw:
        report = run_terminals(
            gw.url,
            fleet,
            tmp_path,
            events=40,
            week=week,
            time_limit=60,
            record_first=record_first,
            batch_size=25,
        )
        assert not report.failures
        assert report.created == report.accepted == 240 == sum(report.by_type.values())
        assert report.pending == report.rejected == 0
        assert len(set(gw.seen.produced)) == 240 and not gw.seen.resent_after_delivery
        assert report.latencies and report.send_seconds > 0
        assert {f"Bearer token-{i}" for i in range(6)} == set(gw.seen.auth)


# ---------------------------------------------------------------- review fixes


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_copied_token_line_is_stripped_and_control_characters_are_refused(
    tmp_path: Path,
) -> None:
    from hallstats.errors import DataError

    with scripted_gateway([]) as gw:
        c = TerminalClient(gw.url, f"  {TOKEN}\n", tmp_path / "s.sqlite", "hall-a", "W01")
        record(c, 3)
        assert c.flush(timeout=10).accepted == 3
        assert gw.seen.auth == [f"Bearer {TOKEN}"]
        c.close()
    secret = "hst_s3cret-value"
    for bad in (f"{secret}\r\nX-Evil: 1", f"{secret}\x00", "hst_s3cret value", ""):
        with pytest.raises(DataError) as refused:
            TerminalClient("http://127.0.0.1:9", bad, tmp_path / "b.sqlite", "hall-a", "W01")
        assert "s3cret" not in str(refused.value) and "token" in str(refused.value)


@pytest.mark.parametrize("where", ["hook", "spool"])
def test_the_background_sender_survives_unexpected_errors_without_leaking_the_token(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], where: str
) -> None:
    """An exception from the on_request hook or the spool (a locked database) is
    recorded, redacted, and retried after the backoff; the thread lives on."""
    raised: list[int] = []

    def boom() -> None:
        if len(raised) < 2:
            raised.append(1)
            if where == "hook":
                raise ValueError(f"hook failed for Bearer {TOKEN}")
            raise sqlite3.OperationalError(f"database is locked ({TOKEN})")

    with scripted_gateway([]) as gw:
        c = client(gw, tmp_path, on_request=(lambda *_: boom()) if where == "hook" else None)
        if where == "spool":
            real = c.spool.next_batch

            def next_batch(limit: int, max_bytes: int) -> list[Spooled]:
                boom()
                return real(limit, max_bytes)

            c.spool.next_batch = next_batch  # type: ignore[method-assign]
        created = record(c, 10)
        c.start()
        assert _wait(lambda: c.counts().pending == 0 and len(raised) == 2), c.failure
        assert c.running() and c.errors == 2
        assert c.failure is not None and c.failure.stop == ERROR
        assert TOKEN not in c.failure.detail and "[token]" in c.failure.detail
        assert set(gw.seen.produced) >= set(created)
        c.close()
    out, err = capfd.readouterr()
    assert TOKEN not in out + err


def test_start_runs_a_new_sender_once_the_old_one_ended(tmp_path: Path) -> None:
    with scripted_gateway([status(401)]) as gw:
        c = client(gw, tmp_path)
        created = record(c, 5)
        c.start()
        assert _wait(lambda: not c.running())
        assert c.failure is not None and c.failure.stop == UNAUTHORIZED
        c.start()  # the operator fixed the token: sending resumes
        assert _wait(lambda: c.counts().pending == 0)
        assert set(gw.seen.produced) == set(created)
        c.close()


@pytest.mark.parametrize("advice", ["0", "-5", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_retry_after_zero_negative_or_past_uses_the_backoff(tmp_path: Path, advice: str) -> None:
    with scripted_gateway([status(503, advice), status(503, advice), ACCEPT]) as gw:
        c = TerminalClient(
            gw.url, TOKEN, tmp_path / "s.sqlite", "hall-a", "W01", backoff=Backoff(0.2, 1.0)
        )
        record(c, 4)
        assert c.flush(timeout=30).accepted == 4
        gaps = [b - a for a, b in zip(gw.seen.times, gw.seen.times[1:], strict=False)]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps  # half of 0.2, then of 0.4
        c.close()


def test_settle_tallies_only_rows_it_deleted(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.sqlite") as spool, Spool(tmp_path / "s.sqlite") as other:
        for i in range(3):
            spool.add(str(uuid.uuid4()), f'{{"n": {i}}}')
        batch = spool.next_batch(10, 10_000)
        verdicts = [Verdict(s.seq, accepted=True) for s in batch]
        other.settle(verdicts)  # a second sender got the answer first
        spool.settle(verdicts)
        assert spool.counts().accepted == 3 and spool.counts().pending == 0


def test_record_first_sim_does_not_hang_when_a_terminal_cannot_start(tmp_path: Path) -> None:
    from terminals.sim import SimTerminal, run_terminals

    fleet = [SimTerminal("hall-sim", "W01", "token-1"), SimTerminal("hall-sim", "W02", "bad\x00")]
    done: list[SimReport] = []
    with scripted_gateway([]) as gw:
        runner = threading.Thread(
            target=lambda: done.append(
                run_terminals(gw.url, fleet, tmp_path, events=5, time_limit=30, record_first=True)
            ),
            daemon=True,
        )
        runner.start()
        runner.join(20)
        assert done, "terminal-sim --record-first hung on a terminal that could not start"
    (report,) = done
    assert report.accepted == 5 and len(report.failures) == 1
    assert "W02" in report.failures[0] and "bad" not in report.failures[0].split(":", 1)[1]
