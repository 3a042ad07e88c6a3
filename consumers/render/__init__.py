"""Renderers of the bulletin section 四(一): text, Markdown, DOCX, JSON and a PNG chart.

All formats render one :class:`~consumers.render.section.Section` (``paragraph``,
the bare sentence for scripts, reads only the finalized figures); the heavy
libraries (python-docx, matplotlib) load only for the format that needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hallstats.errors import DataError
from hallstats.settings import Settings
from schemas.calendar import IsoWeek

FORMATS = ("paragraph", "text", "markdown", "docx", "json", "png")


@dataclass(frozen=True)
class Rendered:
    """One rendered output; binary ones go to a file, text ones may go to stdout."""

    fmt: str
    data: bytes
    binary: bool

    @property
    def suffix(self) -> str:
        return {"paragraph": "txt", "text": "txt", "markdown": "md"}.get(self.fmt, self.fmt)


def _completeness(settings: Settings, week: IsoWeek) -> dict[str, object]:
    """``complete`` and ``silent_terminals`` as of now (live, not part of the version)."""
    from datetime import UTC, datetime

    from consumers import completeness
    from hallstats.clickhouse import connect

    client = connect(settings, reader=True)
    try:
        return completeness.judge(client, settings, week, datetime.now(UTC)).as_json()
    finally:
        client.disconnect()


def _paragraph(settings: Settings, week: IsoWeek, version: int | None) -> str:
    """Only the finalized figures: the paragraph needs no breakdown or year series."""
    from consumers import bulletin, finalized
    from hallstats.clickhouse import connect
    from schemas.ddl import ensure_schema

    client = connect(settings, reader=True)
    try:
        ensure_schema(settings, client)
        snap = finalized.read(client, settings, week, version)
    finally:
        client.disconnect()
    return bulletin.paragraph(snap.weekly, snap.year_to_date)


def render(settings: Settings, week: IsoWeek, version: int | None, fmt: str) -> Rendered:
    """Read the finalized version once and render it in ``fmt``."""
    from consumers.render.section import load

    if fmt not in FORMATS:
        raise DataError(f"bulletin: expected --format among {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "paragraph":
        return Rendered(fmt, (_paragraph(settings, week, version) + "\n").encode(), binary=False)
    section = load(settings, week, version)
    if fmt == "text":
        from consumers.render import text

        return Rendered(fmt, text.render(section).encode(), binary=False)
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
