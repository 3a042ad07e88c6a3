"""Renderers of the bulletin section 四(一): text, Markdown, DOCX, JSON and a PNG chart.

All formats render one :class:`~consumers.render.section.Section`; the heavy
libraries (python-docx, matplotlib) load only for the format that needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hallstats.errors import DataError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek

FORMATS = ("text", "markdown", "docx", "json", "png")


@dataclass(frozen=True)
class Rendered:
    """One rendered output; binary ones go to a file, text ones may go to stdout."""

    fmt: str
    data: bytes
    binary: bool

    @property
    def suffix(self) -> str:
        return {"text": "txt", "markdown": "md"}.get(self.fmt, self.fmt)


def _completeness(settings: Settings, week: IsoWeek) -> dict[str, object]:
    """Issue 3: ``complete`` (None until the grace period passed on the clock) and the
    terminals silent since the week's end (live, not part of the finalized version)."""
    from datetime import UTC, datetime, timedelta

    from consumers.clickhouse import connect
    from consumers.completeness import silent_since_week_end

    client = connect(settings)
    try:
        silent = silent_since_week_end(client, settings, week)
    finally:
        client.disconnect()
    grace_end = week.closes_at(settings.zone) + timedelta(seconds=settings.finalize_grace_seconds)
    return {
        "complete": None if datetime.now(UTC) < grace_end else not silent,
        "silent_terminals": [
            {
                "hall_id": t.hall_id,
                "window_id": t.window_id,
                "last_seen": t.last_seen.astimezone(UTC).isoformat(),
            }
            for t in silent
        ],
    }


def render(settings: Settings, week: IsoWeek, version: int | None, fmt: str) -> Rendered:
    """Read the finalized version once and render it in ``fmt``."""
    from consumers.render.section import load

    if fmt not in FORMATS:
        raise DataError(f"bulletin: expected --format among {', '.join(FORMATS)}, got {fmt!r}")
    section = load(settings, week, version)
    if fmt == "text":
        return Rendered(fmt, (section.paragraph() + "\n").encode(), binary=False)
    if fmt == "markdown":
        from consumers.render import markdown

        return Rendered(fmt, markdown.render(section).encode(), binary=False)
    if fmt == "json":
        data = {**section.as_json(), **_completeness(settings, week)}
        body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        return Rendered(fmt, body.encode(), binary=False)
    from consumers.render import chart

    png = chart.render(section.year_series, week.year, highlight=week)
    if fmt == "png":
        return Rendered(fmt, png, binary=True)
    from consumers.render import docx

    return Rendered(fmt, docx.render(section, png), binary=True)
