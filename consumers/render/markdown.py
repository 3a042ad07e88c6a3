"""Section 四(一) as Markdown, for pasting into drafts and for review in a browser."""

from __future__ import annotations

from consumers.render.section import SUBTITLE, TITLE, Section


def _cell(text: str) -> str:
    # Names come from terminals: keep a stray '|' from splitting a cell.
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render(section: Section) -> str:
    """Header range, headings, the exact paragraph, the table, then the changes."""
    parts = [section.header(), f"## {TITLE}", f"### {SUBTITLE}", section.paragraph()]
    table = section.table()
    if table is None:
        parts.append(section.missing_table_note())
    else:
        lines = [
            "| " + " | ".join(table.header) + " |",
            "| --- |" + " ---: |" * (len(table.header) - 1),
            *("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows),
            "| " + " | ".join(f"**{c}**" for c in table.total) + " |",
        ]
        parts.append("\n".join(lines))
    parts.append("\n\n".join(section.changes_text()))
    return "\n\n".join(parts) + "\n"
