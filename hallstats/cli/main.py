"""The ``hallstats`` command line.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (DataError, e.g. a
malformed or unfinalized week), 3 operational trouble (a service missing or
too slow).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from consumers.render import FORMATS as BULLETIN_FORMATS  # light: no renderer loads here
from hallstats.cli import terminal_sim  # light: the client loads when the command runs
from hallstats.errors import DataError, HallstatsError, IntegrityError, OperationalError
from hallstats.settings import Settings

err = Console(stderr=True)
out = Console()


def _week(text: str) -> object:
    from schemas.calendar import IsoWeek

    try:
        return IsoWeek.parse(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from deploy import stack

    if args.brokers is not None:
        settings = settings.model_copy(update={"stack_kafka_brokers": args.brokers})
    if args.action == "up":
        stack.up(settings, progress=lambda m: err.print(f"[cyan]stack[/]: {m}"))
    elif args.action == "down":
        stack.down(settings, progress=lambda m: err.print(f"[cyan]stack[/]: {m}"))
    states = stack.status(settings)
    for s in states:
        mark = "[green]running[/]" if s.running else "[red]stopped[/]"
        out.print(f"{s.name:<12} {s.address:<22} {mark}  {s.detail}")
    if args.action == "status":
        return 0 if all(s.running for s in states) else 3
    return 0


def cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    from terminals.emit import emit_file

    path = Path(args.file)
    if not path.is_file():
        raise DataError(f"emit: expected a JSON Lines file, got {str(path)!r} (no such file)")
    with _bytes_progress(f"emit {path.name}", path.stat().st_size) as advance:
        report = emit_file(path, settings, validate=not args.no_validate, on_bytes=advance)
    out.print(f"sent {report.sent}, rejected {report.rejected}")
    for reason, n in sorted(report.reasons.items()):
        out.print(f"  rejected {reason}: {n}")
    if report.rejects_file is not None:
        out.print(f"  rejected lines written to {report.rejects_file}")
    return 0


class _bytes_progress:  # noqa: N801 - used like a function
    """A rich progress bar over bytes read, silent when stderr is not a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> Callable[[int], None]:
        self._progress.start()
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from hallstats.cli.worker import run

    run(settings, stage=args.stage, loglevel=args.loglevel)
    return 0


def cmd_finalize(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.finalize import finalize
    from streams.progress import Lag

    def show(lags: list[Lag]) -> None:
        behind = sum(lag.behind for lag in lags)
        if behind:
            err.print(f"waiting for the worker: {behind} messages behind", end="\r")

    result = finalize(settings, args.week, timeout=args.timeout, on_progress=show)
    snap = result.snapshot
    verb = "finalized" if result.created else "unchanged, latest is"
    out.print(f"{snap.week} {verb} version {snap.version} ({snap.content_hash[:12]})")
    if snap.note:
        out.print(f"  {snap.note}")
    return 0


def cmd_bulletin(args: argparse.Namespace, settings: Settings) -> int:
    """One finalized version of a week in ``--format``: text formats to stdout (or
    --output), binary ones (docx, png) to a file."""
    from consumers.render import render

    rendered = render(settings, args.week, args.version, args.format)
    target = args.output or (
        Path(f"bulletin-{args.week}.{rendered.suffix}") if rendered.binary else None
    )
    if target is None:
        sys.stdout.write(rendered.data.decode())
        return 0
    Path(target).write_bytes(rendered.data)
    err.print(f"wrote {args.format} of {args.week} to {target}")
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.api import serve

    serve(settings, port=args.port)
    return 0


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import serve

    serve(settings, port=args.port)
    return 0


def cmd_terminals(args: argparse.Namespace, settings: Settings) -> int:
    """Terminal credentials for the gateway; a new token is printed once, on the last line."""
    from gateway import TokenStore
    from schemas.ddl import ensure_schema

    if args.action != "list" and not (args.hall and args.window):
        raise DataError(
            f"terminals {args.action}: expected --hall H --window W, got "
            f"--hall {args.hall!r} --window {args.window!r}"
        )
    ensure_schema(settings)
    store = TokenStore(settings)
    try:
        if args.action == "add":
            token = store.add(args.hall, args.window)
            err.print(
                f"new token for terminal {args.hall}/{args.window} (shown only now; "
                "hallstats keeps only its hash):",
                highlight=False,
            )
            print(token)
        elif args.action == "revoke":
            revoked = store.revoke(args.hall, args.window)
            if not revoked:
                raise DataError(
                    f"terminals revoke: expected a current token for {args.hall}/{args.window}, "
                    "found none (see `hallstats terminals list`)"
                )
            out.print(f"revoked {revoked} token(s) of {args.hall}/{args.window}", highlight=False)
        else:
            for c in store.credentials():
                state = f"revoked {c.changed_at:%Y-%m-%d %H:%M:%S}Z" if c.revoked else "active"
                print(
                    f"{c.hall_id}\t{c.window_id}\tsha256:{c.hash_prefix}…\t"
                    f"issued {c.issued_at:%Y-%m-%d %H:%M:%S}Z\t{state}"
                )
    finally:
        store.close()
    return 0


def cmd_revisions(args: argparse.Namespace, settings: Settings) -> int:
    from consumers import finalized
    from hallstats.clickhouse import connect
    from schemas.ddl import ensure_schema

    client = connect(settings, reader=True)
    try:
        ensure_schema(settings, client)
        found = finalized.versions(client, settings, args.week)
    finally:
        client.disconnect()
    if not found:
        raise DataError(f"week {args.week}: expected finalized versions, found none")
    for snap in found:
        out.print(
            f"{snap.week} v{snap.version}  {snap.finalized_at.isoformat()}  "
            f"{snap.content_hash[:12]}  weekly {snap.weekly.as_dict()}  "
            f"ytd {snap.year_to_date.as_dict()}",
            highlight=False,
        )
        if snap.note:
            out.print(f"    {snap.note}", highlight=False)
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.reconcile import reconcile
    from hallstats.clickhouse import connect
    from schemas.ddl import ensure_schema

    client = connect(settings, reader=True)
    try:
        ensure_schema(settings, client)
        check = reconcile(client, settings, args.week)
    finally:
        client.disconnect()
    if not check.ok:
        raise IntegrityError(f"week {args.week}: " + "; ".join(str(d) for d in check.differences))
    out.print(
        f"{args.week}: streaming counters and archive agree "
        f"(weekly {check.weekly.as_dict()}, ytd {check.year_to_date.as_dict()})",
        highlight=False,
    )
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from consumers import dlq

    letters = dlq.read(settings, reason=args.reason)
    if args.replay:
        report = dlq.replay(settings, letters)
        out.print(f"re-sent {report.resent}; still rejected {report.still_rejected}")
        return 0
    if args.export:
        n = dlq.export(letters, Path(args.export))
        out.print(f"exported {n} originals to {args.export}; fix them, then `hallstats emit`")
        return 0
    count = 0
    for letter in letters:
        count += 1
        if args.json:
            print(
                json.dumps(
                    {
                        "reason": letter.reason,
                        "field": letter.field,
                        "topic": letter.source_topic,
                        "partition": letter.source_partition,
                        "offset": letter.source_offset,
                        "rejected_at": letter.rejected_at,
                        "message": letter.message,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            out.print(
                f"{letter.rejected_at[:19]}  {letter.reason:<26} {letter.source_topic}"
                f"[{letter.source_partition}]@{letter.source_offset}  {letter.message[:80]}",
                highlight=False,
            )
    if not args.json:
        out.print(f"{count} rejected messages")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.backup import backup

    with _table_progress("backup") as progress:
        report = backup(settings, Path(args.dir), progress=progress)
    for t in report.tables:
        out.print(f"{t.name:<22} {t.rows:>12} rows {t.bytes:>14} bytes")
    rows = sum(t.rows for t in report.tables)
    out.print(
        f"backed up {report.database}: {len(report.tables)} tables, {rows} rows "
        f"to {report.directory} in {report.seconds:.1f} s"
    )
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.backup import restore

    with _table_progress("restore") as progress:
        report = restore(settings, Path(args.dir), force=args.force, progress=progress)
    for t in report.tables:
        out.print(f"{t.name:<22} {t.rows:>12} rows")
    rows = sum(t.rows for t in report.tables)
    out.print(
        f"restored {report.directory} into {report.database}: {len(report.tables)} tables, "
        f"{rows} rows in {report.seconds:.1f} s"
    )
    return 0


class _table_progress:  # noqa: N801 - used like a function
    """One rich bar per table (bytes), silent when stderr is not a terminal."""

    def __init__(self, verb: str) -> None:
        self._verb = verb
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            disable=not err.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}

    def _report(self, table: str, done: int, total: int | None) -> None:
        if table not in self._tasks:
            self._tasks[table] = self._progress.add_task(f"{self._verb} {table}", total=total)
        self._progress.advance(self._tasks[table], done)

    def __enter__(self) -> Callable[[str, int, int | None], None]:
        self._progress.start()
        return self._report

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    from terminals import sample

    spec = (
        sample.SampleSpec()
        if not args.clean
        else sample.SampleSpec(resend_rate=0.0, invalid_count=0)
    )
    lines = sample.write_jsonl(Path(args.out), spec)
    out.print(f"wrote {lines} lines to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from hallstats.cli.demo import run_demo

    run_demo(settings, console=err, keep_worker=args.keep_worker)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from hallstats.cli.status import run

    return run(settings, console=out, once=args.once, interval=args.interval, url=args.url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hallstats", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="start/stop the local Kafka + ClickHouse (127.0.0.1)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument(
        "--brokers",
        type=int,
        choices=range(1, 10),
        metavar="N",
        help="Kafka nodes (default HALLSTATS_STACK_KAFKA_BROKERS, 1; 3 makes a KRaft cluster)",
    )
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("emit", help="publish a JSON Lines file of events to Kafka")
    p.add_argument("file")
    p.add_argument("--no-validate", action="store_true", help="send lines as they are")
    p.set_defaults(func=cmd_emit)

    p = sub.add_parser("worker", help="run the worker: intake (validate) and count stages")
    p.add_argument(
        "--stage",
        choices=["all", "intake", "count"],
        default="all",
        help="all (default): counting here plus intake processes; or one stage alone",
    )
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("finalize", help="freeze a closed week's figures")
    p.add_argument("--week", required=True, type=_week, help="ISO week, e.g. 2024-W50")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the worker")
    p.set_defaults(func=cmd_finalize)

    p = sub.add_parser("bulletin", help="print a week's finalized figures")
    p.add_argument("--week", required=True, type=_week)
    p.add_argument(
        "--format",
        choices=BULLETIN_FORMATS,
        default="paragraph",
        help="paragraph (default, the bare sentence for scripts); text: the whole section "
        "for a terminal; markdown, docx, json, png: the section in that form",
    )
    p.add_argument("--version", type=int, default=None, help="a given version (default latest)")
    p.add_argument("--output", default=None, help="write to this file (docx/png default: ./)")
    p.set_defaults(func=cmd_bulletin)

    p = sub.add_parser("api", help="serve the read-only HTTP API on 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default HALLSTATS_API_PORT (8080)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("gateway", help="serve the front-desk HTTP gateway (POST /v1/events)")
    p.add_argument("--port", type=int, default=None, help="default HALLSTATS_GATEWAY_PORT (8090)")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("terminals", help="issue, revoke or list terminal tokens for the gateway")
    p.add_argument("action", choices=["add", "revoke", "list"])
    p.add_argument("--hall", default=None, help="hall_id of the terminal (add, revoke)")
    p.add_argument("--window", default=None, help="window_id of the terminal (add, revoke)")
    p.set_defaults(func=cmd_terminals)

    terminal_sim.add_parser(sub)

    p = sub.add_parser("revisions", help="list a week's finalized versions")
    p.add_argument("--week", required=True, type=_week)
    p.set_defaults(func=cmd_revisions)

    p = sub.add_parser("reconcile", help="recount a week from the archive and compare")
    p.add_argument("--week", required=True, type=_week)
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("dlq", help="list, export or replay rejected messages")
    p.add_argument("--reason", default=None, help="only this rejection reason")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--replay", action="store_true", help="re-send originals that now validate")
    p.add_argument("--export", default=None, help="write originals as JSON Lines to fix")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("backup", help="write every table and a manifest to a folder")
    p.add_argument("dir", help="a new or empty folder")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="load a backup folder into the (empty) database")
    p.add_argument("dir", help="a folder written by `hallstats backup`")
    p.add_argument("--force", action="store_true", help="replace tables that hold data")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("sample", help="write the calibrated sample year as JSON Lines")
    p.add_argument("out")
    p.add_argument("--clean", action="store_true", help="no re-sends and no invalid lines")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("status", help="live view: throughput, lag, weeks, silent terminals")
    p.add_argument("--once", action="store_true", help="print one reading and exit")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    p.add_argument("--url", default=None, help="worker /metrics URL (default from settings)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="stack up, replay the sample year, finalize 2024-W50, print")
    p.add_argument("--keep-worker", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return int(args.func(args, settings))
    except DataError as exc:
        err.print(f"[red]hallstats: error:[/] {exc}", highlight=False)
        return 2
    except OperationalError as exc:
        err.print(f"[red]hallstats: unavailable:[/] {exc}", highlight=False)
        return 3
    except IntegrityError as exc:
        err.print(f"[red]hallstats: integrity:[/] {exc}", highlight=False)
        return 4
    except HallstatsError as exc:  # pragma: no cover - every raise uses a subclass
        err.print(f"[red]hallstats: error:[/] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
