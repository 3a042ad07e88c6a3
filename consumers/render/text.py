"""Section 四(一) as plain text for a monospace terminal (``--format text``).

The parts and their order come from the one :class:`Section`, as for Markdown
and DOCX; only the layout is this module's. Columns are padded by display
width, not by character count: a CJK character (East Asian Wide or Fullwidth)
takes two terminal cells, so padding by ``len`` would shear every row holding a
department name. To fit a classic 80-cell terminal, a header cell puts its unit
on a second line and a table too wide for ``width`` continues in further
column blocks, each repeating the department column.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

from consumers.render.section import SUBTITLE, TABLE_CAPTION, TITLE, Section, Table

WIDTH = 80  # cells; fixed rather than the terminal's, so a saved file reads the same
GAP = 2  # cells between columns


def display_width(text: str) -> int:
    """Cells ``text`` takes in a monospace terminal: Wide and Fullwidth characters two,
    combining marks none (they sit on the previous character), everything else one."""
    return sum(
        0
        if unicodedata.combining(ch)
        else 2
        if unicodedata.east_asian_width(ch) in ("W", "F")
        else 1
        for ch in text
    )


def visible(text: str) -> str:
    """Control characters (a name may hold one: the contract accepts it) spelled as
    escapes, so a cell never breaks its row."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _pad(text: str, width: int, *, right: bool) -> str:
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


def _split_header(cell: str) -> tuple[str, str]:
    """``本周咨询（人次）`` -> ``本周咨询`` over ``（人次）``: half the column width."""
    head, paren, unit = cell.partition("（")
    return (head, paren + unit) if paren and head else (cell, "")


def _blocks(widths: Sequence[int], width: int) -> list[list[int]]:
    """The figure columns (1..n) in the fewest equal-sized consecutive blocks that fit
    ``width`` beside the name column; one column a block when even that overflows."""
    columns = list(range(1, len(widths)))
    for count in range(1, len(columns) + 1):
        size = -(-len(columns) // count)  # ceil
        blocks = [columns[i : i + size] for i in range(0, len(columns), size)]
        if all(widths[0] + sum(GAP + widths[c] for c in b) <= width for b in blocks):
            return blocks
    return [[c] for c in columns]


def table_lines(table: Table, width: int = WIDTH) -> list[str]:
    """The table as lines aligned in a monospace terminal: names left, figures right,
    rules around the body, the 合计 row last; blocks separated by a blank line."""
    headers = [_split_header(cell) for cell in table.header]
    body = [[visible(cell) for cell in row] for row in table.rows]
    total = [visible(cell) for cell in table.total]
    rows = [*body, total]
    widths = [
        max(display_width(text) for text in (*headers[i], *(row[i] for row in rows)))
        for i in range(len(table.header))
    ]
    lines: list[str] = []
    for block in _blocks(widths, width):
        shown = [0, *block]

        def line(cells: Iterable[str], shown: list[int] = shown) -> str:
            padded = (
                _pad(text, widths[c], right=c > 0) for c, text in zip(shown, cells, strict=True)
            )
            return (" " * GAP).join(padded).rstrip(" ")

        rule = line("-" * widths[c] for c in shown)
        if lines:
            lines.append("")
        units = line(headers[c][1] for c in shown)
        lines += [line(headers[c][0] for c in shown), *([units] if units else []), rule]
        lines += [line(row[c] for c in shown) for row in body]
        lines += [rule, line(total[c] for c in shown)]
    return lines


def render(section: Section, width: int = WIDTH) -> str:
    """Header range, headings, the exact paragraph (one line: it is pasted, not read
    here), the table (or why there is none), then the changes."""
    table = section.table()
    parts = [
        section.header(),
        f"{TITLE}\n{SUBTITLE}",
        section.paragraph(),
        section.missing_table_note()
        if table is None
        else "\n".join([TABLE_CAPTION, *table_lines(table, width)]),
        "\n\n".join(section.changes_text()),
    ]
    return "\n\n".join(parts) + "\n"
