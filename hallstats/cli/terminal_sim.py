"""``hallstats terminal-sim``: N simulated window terminals sending through the gateway.

Each terminal is a real offline-safe client (spool + sender) in its own thread.
Tokens come from ``--tokens FILE`` (lines ``hall_id window_id token``), or are
issued here with the same code as ``hallstats terminals add`` and revoked when the
run ends, so a simulation leaves no live credential behind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from hallstats.errors import DataError
from hallstats.settings import Settings

if TYPE_CHECKING:  # the parser is built on every command: the client loads only here
    from terminals.sim import SimReport, SimTerminal


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "terminal-sim", help="run simulated window terminals through the gateway's client"
    )
    p.add_argument("--url", default=None, help="gateway URL (default from HALLSTATS_GATEWAY_*)")
    p.add_argument("--terminals", type=int, default=4, help="how many terminals (threads)")
    p.add_argument("--events", type=int, default=100, help="events each terminal records")
    p.add_argument("--rate", type=float, default=0.0, help="events/s per terminal (0: no pause)")
    p.add_argument("--week", default=None, help="date the events inside this ISO week")
    p.add_argument("--tokens", default=None, help="file of 'hall_id window_id token' lines")
    p.add_argument("--hall", default="hall-sim", help="hall_id of issued terminals")
    p.add_argument("--spool-dir", default=None, help="default <stack_dir>/terminal-sim")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds; then stop")
    p.add_argument("--batch-size", type=int, default=1000, help="events per request (<=1000)")
    p.add_argument("--record-first", action="store_true", help="spool all, then send")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run)


def read_tokens(path: Path) -> list[SimTerminal]:
    from terminals.sim import SimTerminal

    terminals = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(
                f"{path}:{number}: expected 'hall_id window_id token', got {len(parts)} fields"
            )
        terminals.append(SimTerminal(*parts))
    return terminals


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from schemas.calendar import IsoWeek
    from terminals.sim import SimTerminal, run_terminals

    err = Console(stderr=True)
    if args.terminals < 1 or args.events < 0 or args.time_limit <= 0:
        raise DataError("terminal-sim: expected --terminals >= 1, --events >= 0, --time-limit > 0")
    week = IsoWeek.parse(args.week) if args.week else None
    url = args.url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    spool_dir = Path(args.spool_dir) if args.spool_dir else settings.stack_dir / "terminal-sim"
    store = None
    if args.tokens:
        terminals = read_tokens(Path(args.tokens))[: args.terminals]
    else:
        from gateway import TokenStore
        from schemas.ddl import ensure_schema

        ensure_schema(settings)
        store = TokenStore(settings)
        terminals = [
            SimTerminal(args.hall, window, store.add(args.hall, window))
            for window in (f"SIM-{i:03d}" for i in range(1, args.terminals + 1))
        ]
        err.print(f"issued {len(terminals)} terminal tokens for {args.hall}", highlight=False)
    try:
        report = run_terminals(
            url,
            terminals,
            spool_dir,
            events=args.events,
            rate=args.rate,
            week=week,
            zone=settings.zone,
            time_limit=args.time_limit,
            record_first=args.record_first,
            batch_size=args.batch_size,
        )
    finally:
        if store is not None:
            for t in terminals:
                store.revoke(t.hall_id, t.window_id)
            store.close()
    show(report, as_json=args.json)
    for failure in report.failures:
        err.print(f"[red]terminal-sim:[/] {failure}", highlight=False)
    if report.pending or report.failures:
        err.print(
            f"[red]terminal-sim:[/] {report.pending} events still pending in {spool_dir} "
            f"(gateway {url} unreachable, refusing or too slow); a rerun sends them first",
            highlight=False,
        )
        return 3
    return 0


def show(report: SimReport, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "terminals": report.terminals,
                    "created": report.created,
                    "accepted": report.accepted,
                    "rejected": report.rejected,
                    "pending": report.pending,
                    "by_type": dict(report.by_type),
                    "requests": report.requests,
                    "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
                    "network_errors": report.network_errors,
                    "elapsed_seconds": round(report.elapsed, 3),
                    "failures": report.failures,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(report.summary())
