"""DOCX with python-docx: body paragraphs and tables in document order, headings from the
paragraph style (also German "Überschrift N" and custom styles based on them), list paragraphs
as lists. The page header of the first section is searched for the QM header line when the body
has none, because Word templates often keep it there."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument

from ._shared import Blocks, check_zip, finish, looks_like_header_line

_HEADING_STYLE = re.compile(r"^(?:heading|überschrift|titre|titolo|kop)\s*([1-9])$", re.I)
_TITLE_STYLE = re.compile(r"^(?:title|titel)$", re.I)
_LIST_STYLE = re.compile(r"list|aufzählung|liste|nummerierung", re.I)


def _heading_level(style: Any) -> int | None:
    """Level from the style or the style it is based on (custom "QM Überschrift 1" styles)."""
    for _ in range(4):
        if style is None:
            return None
        name = (style.name or "").strip()
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
        if _TITLE_STYLE.match(name):
            return 1
        style = style.base_style
    return None


def _is_list(paragraph: Any) -> bool:
    p_pr = paragraph._p.pPr
    if p_pr is not None and p_pr.numPr is not None:
        return True
    name = paragraph.style.name if paragraph.style is not None else ""
    return bool(_LIST_STYLE.search(name or ""))


def _table_rows(table: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a horizontally merged cell repeats; keep it once
                continue
            previous = cell._tc
            cells.append(" ".join(p.text for p in cell.paragraphs if p.text.strip()))
        rows.append(cells)
    return rows


def load_docx(path: Path, data: bytes) -> LoadedDocument:
    check_zip(data, path, "DOCX")
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except PackageNotFoundError:
        raise IngestError("corrupt DOCX (not a Word package)", path=str(path)) from None
    except (KeyError, ValueError) as exc:
        raise IngestError(f"corrupt DOCX ({exc})", path=str(path)) from None

    blocks = Blocks()
    items: list[str] = []

    def flush_list() -> None:
        if items:
            blocks.list(items)
            items.clear()

    for element in document.iter_inner_content():
        if isinstance(element, Table):
            flush_list()
            blocks.table(_table_rows(element))
            continue
        text = element.text
        if not text.strip():
            continue
        level = _heading_level(element.style)
        if level is not None:
            flush_list()
            blocks.heading(text, level)
        elif _is_list(element):
            items.append(text)
        else:
            flush_list()
            blocks.paragraph(text)
    flush_list()

    header_line = None
    try:
        page_header = document.sections[0].header
        if not page_header.is_linked_to_previous:  # else there is no header part to search
            for paragraph in page_header.paragraphs:
                if looks_like_header_line(paragraph.text):
                    header_line = " ".join(paragraph.text.split())
                    break
    except (IndexError, KeyError, ValueError):
        pass
    title = document.core_properties.title or None
    return finish(blocks, path, title=title, header_line=header_line)
