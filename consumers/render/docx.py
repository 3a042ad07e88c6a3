"""Section 四(一) as a DOCX fragment in the bulletin's house style.

Chinese official documents set headings in 黑体/楷体 and body text in 仿宋; the
East Asian font is named on every run because Word and LibreOffice otherwise
fall back to a Latin font's pairing. Machines without those fonts substitute
their own CJK font, so the text stays intact either way.
"""

from __future__ import annotations

import io

from docx import Document
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Cm, Pt
from docx.table import Table as DocxTable
from docx.text.paragraph import Paragraph
from docx.text.run import Run

from consumers.render.section import SUBTITLE, TABLE_CAPTION, TITLE, Section

_BODY = "仿宋_GB2312"
_HEADING = "黑体"
_SUBHEADING = "楷体_GB2312"
_LATIN = "Times New Roman"


def _style(run: Run, east_asia: str, size: float, *, bold: bool = False) -> Run:
    run.font.name = _LATIN
    run.font.size = Pt(size)
    run.font.bold = bold
    run._element.get_or_add_rPr().get_or_add_rFonts().set(qn("w:eastAsia"), east_asia)
    return run


def _line(paragraph: Paragraph, text: str, east_asia: str, size: float, *, indent: bool) -> None:
    if indent:
        paragraph.paragraph_format.first_line_indent = Pt(size * 2)  # two characters
    _style(paragraph.add_run(text), east_asia, size)


def _table(table: DocxTable, rows: list[tuple[str, ...]]) -> None:
    table.style = "Table Grid"
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    table.autofit = False
    # Fits 7-character names and 6-digit figures even in a wide fallback font
    # (LibreOffice substitutes DejaVu when Times New Roman is missing).
    widths = [Cm(2.8), *[Cm(1.62)] * (len(rows[0]) - 1)]
    for column, width in zip(table.columns, widths, strict=True):
        column.width = width  # the grid LibreOffice reads; cell widths are Word's
    for r, values in enumerate(rows):
        bold = r in (0, len(rows) - 1)  # header and 合计
        for c, value in enumerate(values):
            cell = table.cell(r, c)
            cell.width = widths[c]
            paragraph = cell.paragraphs[0]
            paragraph.alignment = WD_ALIGN_PARAGRAPH.LEFT if c == 0 else WD_ALIGN_PARAGRAPH.RIGHT
            if r == 0:
                paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
            _style(paragraph.add_run(value), _BODY, 8, bold=bold)


def render(section: Section, chart_png: bytes | None = None) -> bytes:
    """DOCX bytes: header range, headings, paragraph, table, changes, then the chart."""
    document = Document()
    document.core_properties.title = f"{TITLE}{SUBTITLE} {section.week}"
    page = document.sections[0]
    page.page_width, page.page_height = Cm(21), Cm(29.7)  # A4
    page.left_margin = page.right_margin = Cm(2.6)

    header = document.add_paragraph()
    header.alignment = WD_ALIGN_PARAGRAPH.CENTER
    _style(header.add_run(section.header()), _SUBHEADING, 16)

    _line(document.add_paragraph(), TITLE, _HEADING, 16, indent=True)
    _line(document.add_paragraph(), SUBTITLE, _SUBHEADING, 16, indent=True)
    _line(document.add_paragraph(), section.paragraph(), _BODY, 16, indent=True)

    table = section.table()
    if table is None:
        _line(document.add_paragraph(), section.missing_table_note(), _BODY, 12, indent=True)
    else:
        caption = document.add_paragraph()
        caption.alignment = WD_ALIGN_PARAGRAPH.CENTER
        _style(caption.add_run(TABLE_CAPTION), _HEADING, 12)
        rows = [table.header, *table.rows, table.total]
        _table(document.add_table(rows=len(rows), cols=len(table.header)), rows)

    for sentence in section.changes_text():
        _line(document.add_paragraph(), sentence, _BODY, 16, indent=True)

    if chart_png is not None:
        document.add_picture(io.BytesIO(chart_png), width=Cm(15.5))
        document.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER

    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
