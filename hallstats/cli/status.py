"""``hallstats status``: the operations view in a terminal, without Prometheus.

Throughput comes from two scrapes of the worker's ``/metrics`` a few seconds
apart (what is flowing now); everything else is read from the durable truth
so it is right whichever worker owns which partition: lag from each stage's
durable position (the intake group's committed offsets, ClickHouse's
``progress`` for counting), counts, week states and terminal activity from
ClickHouse.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from consumers.lifecycle import WeekState
from hallstats.errors import OperationalError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek
from schemas.catalog import COUNTED_TYPES
from schemas.figures import TypeCounts
from schemas.queries import TERMINAL_HORIZON_TEXT

WEEKS_SHOWN = 4
SILENT_SHOWN = 12
#: The lifecycle's state (:func:`consumers.lifecycle.week_state`) as shown; a due week is
#: one the automatic finalizer should already have frozen.
_STATE_SHOWN = {
    WeekState.OPEN: "open",
    WeekState.CLOSING: "closing",
    WeekState.DUE: "closing, overdue",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """Every sample of one ``/metrics`` page, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum_by(samples: Samples, name: str, label: str | None) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (sample, labels), value in samples.items():
        if sample == name:
            out[dict(labels).get(label, "") if label else ""] += value
    return out


def rates(first: Samples, second: Samples, seconds: float) -> dict[str, float]:
    """Per-second rates between two scrapes: accepted per type, ``dlq``, ``duplicates``.

    A counter that went down means the worker restarted: its new value is the increase.
    """

    def per_second(name: str, label: str | None) -> dict[str, float]:
        before, after = _sum_by(first, name, label), _sum_by(second, name, label)
        return {
            k: (v - before.get(k, 0.0) if v >= before.get(k, 0.0) else v) / seconds
            for k, v in after.items()
        }

    accepted = per_second("hallstats_events_accepted_total", "type")
    out = {t.value: accepted.get(t.value, 0.0) for t in COUNTED_TYPES}
    out["dlq"] = sum(per_second("hallstats_events_rejected_total", None).values())
    out["duplicates"] = sum(per_second("hallstats_duplicates_dropped_total", None).values())
    # Per stage: events passed on per second and the share of time spent working.
    for stage, rate in per_second("hallstats_stage_events_total", "stage").items():
        out[f"stage:{stage}"] = rate
    for stage, busy in per_second("hallstats_stage_busy_seconds_total", "stage").items():
        out[f"busy:{stage}"] = busy
    return out


@dataclass(frozen=True)
class WeekRow:
    week: IsoWeek
    state: str  # open | closing | closing, overdue [(stream behind)] | final vN
    counts: TypeCounts


@dataclass
class Report:
    now: datetime
    metrics_url: str | None
    interval: float
    rates: dict[str, float] | None = None
    worker_error: str | None = None
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (period, type)
    lags: list[tuple[str, int, int, int]] = field(default_factory=list)
    weeks: list[WeekRow] = field(default_factory=list)
    windows: list[tuple[str, str, datetime, bool]] = field(default_factory=list)


def gather(settings: Settings, *, url: str | None, interval: float) -> Report:
    """One status reading; ClickHouse or Kafka being down raises OperationalError."""
    from consumers import figures
    from consumers.lifecycle import stream_time, week_status
    from hallstats.clickhouse import connect
    from schemas.ddl import ensure_schema
    from schemas.queries import finalized_weeks
    from streams.metrics import live_counts, window_activity
    from streams.progress import lags

    report = Report(now=datetime.now(UTC), metrics_url=url, interval=interval)
    if url is None:
        report.worker_error = "metrics disabled (HALLSTATS_METRICS_PORT=0)"
    else:
        try:
            first, started = scrape(url), time.monotonic()
            time.sleep(interval)
            second = scrape(url)
            report.rates = rates(first, second, time.monotonic() - started)
        except OSError as exc:
            report.worker_error = f"cannot scrape {url}: {exc}"
    report.now = now = datetime.now(UTC)
    for topic in (settings.topic, settings.by_id_topic):
        report.lags += [
            (lag.topic, lag.partition, lag.committed, lag.high) for lag in lags(settings, topic)
        ]
    client = connect(settings, reader=True)
    try:
        ensure_schema(settings, client)
        for (period, kind, _hall), n in live_counts(client, settings, now).items():
            report.counts[(period, kind)] = report.counts.get((period, kind), 0) + n
        final = finalized_weeks(client, settings)
        latest = stream_time(client, settings)
        week = IsoWeek.of(now.astimezone(settings.zone).date())
        for _ in range(WEEKS_SHOWN):
            status = week_status(
                week, settings, now=now, stream_time=latest, finalized=week in final
            )
            state = (
                f"final v{final[week]}"
                if status.state is WeekState.FINAL
                else _STATE_SHOWN[status.state]
            )
            if status.state is WeekState.CLOSING and not status.grace_running:
                # Overdue on the clock, as the WeekNotFinalizedPastDeadline alert says,
                # even when the stream has not reached the grace end (a stalled worker
                # or silent terminals are exactly what the operator must see).
                state = "closing, overdue (stream behind)"
            report.weeks.append(WeekRow(week, state, figures.weekly(client, settings, week)))
            week = week.previous()
        report.windows = [
            (w.hall_id, w.window_id, w.last_seen, w.silent(now, settings.terminal_silence_seconds))
            for w in window_activity(client, settings, now)
        ]
    finally:
        client.disconnect()
    return report


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def render(report: Report, settings: Settings) -> RenderableType:
    local = report.now.astimezone(settings.zone)
    head = Text.assemble(
        ("hallstats status ", "bold"),
        f"{local:%Y-%m-%d %H:%M:%S} {settings.timezone}, week {IsoWeek.of(local.date())}, ",
        f"app {settings.app_id}",
    )
    parts: list[RenderableType] = [head]

    flow = Table(
        title=f"Throughput (over {report.interval:g} s) and counts so far", title_justify="left"
    )
    for column in ("type", "events/s", "today", "this week", "this year"):
        flow.add_column(column, justify="left" if column == "type" else "right")
    for t in COUNTED_TYPES:
        rate = "-" if report.rates is None else f"{report.rates[t.value]:.1f}"
        flow.add_row(
            t.value,
            rate,
            *(f"{report.counts.get((p, t.value), 0):,}" for p in ("today", "week", "year_to_date")),
        )
    if report.rates is not None:
        flow.add_row("[red]DLQ[/]", f"{report.rates['dlq']:.1f}", "", "", "")
        flow.add_row("duplicates", f"{report.rates['duplicates']:.1f}", "", "", "")
    parts.append(flow)
    if report.worker_error:
        parts.append(Text(f"worker: {report.worker_error}", style="red"))

    stages = Table(title="Stages", title_justify="left")
    for column in ("stage", "input", "events/s", "busy", "behind"):
        stages.add_column(column, justify="left" if column in {"stage", "input"} else "right")
    inputs = {"intake": settings.topic, "count": settings.by_id_topic}
    for stage, topic in inputs.items():
        behind = sum(max(0, high - done) for t, _p, done, high in report.lags if t == topic)
        rate = busy = "-"
        if report.rates is not None:
            rate = f"{report.rates.get(f'stage:{stage}', 0.0):,.0f}"
            busy = f"{report.rates.get(f'busy:{stage}', 0.0):.0%}"
        stages.add_row(stage, topic, rate, busy, f"{behind:,}")
    parts.append(stages)

    lag = Table(title="Consumer lag", title_justify="left")
    for column in ("topic", "partition", "committed", "end", "behind"):
        lag.add_column(column, justify="left" if column == "topic" else "right")
    for topic, partition, committed, high in report.lags:
        behind = max(0, high - committed)
        style = "red" if behind > 1000 else ("yellow" if behind else "")
        lag.add_row(
            topic, str(partition), f"{committed:,}", f"{high:,}", Text(f"{behind:,}", style=style)
        )
    parts.append(lag)

    weeks = Table(title="Weeks", title_justify="left")
    for column in ("week", "dates", "state", *(t.value for t in COUNTED_TYPES)):
        weeks.add_column(
            column, justify="right" if column in {t.value for t in COUNTED_TYPES} else "left"
        )
    for row in report.weeks:
        style = (
            "red"
            if row.state.startswith("closing, overdue")
            else {"open": "cyan", "closing": "yellow"}.get(row.state, "green")
        )
        weeks.add_row(
            str(row.week),
            f"{row.week.start:%m-%d}..{row.week.end:%m-%d}",
            Text(row.state, style=style),
            *(f"{n:,}" for n in row.counts.as_dict().values()),
        )
    parts.append(weeks)

    halls: dict[str, list[tuple[str, datetime, bool]]] = defaultdict(list)
    for hall, window, seen, is_silent in report.windows:
        halls[hall].append((window, seen, is_silent))
    quiet_for = _ago(settings.terminal_silence_seconds)
    terminals = Table(
        title=f"Terminals (seen in {TERMINAL_HORIZON_TEXT}; silent = nothing for {quiet_for})",
        title_justify="left",
    )
    for column in ("hall", "windows", "silent", "last event", "silent windows"):
        terminals.add_column(column, justify="right" if column in {"windows", "silent"} else "left")
    for hall, windows in sorted(halls.items()):
        silent = sorted((seen, window) for window, seen, quiet in windows if quiet)
        latest = max(seen for _, seen, _ in windows)
        names = ", ".join(
            f"{w} ({_ago((report.now - seen).total_seconds())})"
            for seen, w in silent[:SILENT_SHOWN]
        )
        if len(silent) > SILENT_SHOWN:
            names += f", +{len(silent) - SILENT_SHOWN} more"
        terminals.add_row(
            hall,
            str(len(windows)),
            Text(str(len(silent)), style="red" if silent else "green"),
            f"{_ago((report.now - latest).total_seconds())} ago",
            names,
        )
    if not halls:
        terminals.add_row("-", "0", "0", f"no event in {TERMINAL_HORIZON_TEXT}", "")
    parts.append(terminals)
    return Group(*parts)


def metrics_url(settings: Settings) -> str | None:
    if settings.metrics_port == 0:
        return None
    return f"http://127.0.0.1:{settings.metrics_port}/metrics"


def run(
    settings: Settings,
    *,
    console: Console,
    once: bool,
    interval: float,
    url: str | None = None,
) -> int:
    """Print once (exit 3 if the worker cannot be scraped) or refresh until Ctrl-C."""
    from rich.live import Live

    target = url or metrics_url(settings)
    if once:
        report = gather(settings, url=target, interval=interval)
        console.print(render(report, settings))
        return 3 if report.worker_error else 0
    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    view = render(gather(settings, url=target, interval=interval), settings)
                except OperationalError as exc:
                    view = Text(f"unavailable: {exc}", style="red")
                    time.sleep(interval)
                live.update(view, refresh=True)
    except KeyboardInterrupt:
        return 0
