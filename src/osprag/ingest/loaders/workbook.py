"""XLSX with openpyxl in read-only mode (rows streamed, not the whole workbook in memory).

Each sheet's first non-empty row is its column header; data rows follow in ``rows`` blocks
with the sheet name and spreadsheet row numbers. A lone cell in the first non-empty row of the
first sheet (usually A1) that reads like ``Version: … | TAG: …`` is the QM header line, the way
exports put document metadata above the table. Cached formula results are read, not formulas.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument
from osprag.ingest.normalize import normalize_inline

from ._shared import Blocks, check_zip, emit_rows, finish, looks_like_header_line


def cell_text(value: Any, number_format: str | None = None) -> str:
    """A cell as the user reads it: dates without midnight, 0.92 with a % format as "92 %"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "WAHR" if value else "FALSCH"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float):
        if number_format and "%" in number_format:
            return f"{value * 100:.10g} %"
        return str(int(value)) if value.is_integer() else f"{value:.10g}"
    return str(value)


def _sheet_rows(sheet: Any) -> Iterator[tuple[int, list[str]]]:
    for row in sheet.iter_rows():
        cells = [cell_text(c.value, getattr(c, "number_format", None)) for c in row]
        if any(c.strip() for c in cells):
            number = next((c.row for c in row if getattr(c, "row", None)), None)
            yield int(number or 0), cells


def load_xlsx(path: Path, data: bytes) -> LoadedDocument:
    check_zip(data, path, "XLSX")
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as exc:
        raise IngestError(f"corrupt XLSX ({type(exc).__name__}: {exc})", path=str(path)) from None
    blocks = Blocks()
    header_line = None
    try:
        for index, sheet in enumerate(workbook.worksheets):
            rows = _sheet_rows(sheet)
            header = next(rows, None)
            if header and index == 0:
                filled = [c for c in header[1] if c.strip()]
                if len(filled) == 1 and looks_like_header_line(filled[0]):
                    header_line = normalize_inline(filled[0])
                    header = next(rows, None)
            if header is None:
                continue
            emit_rows(blocks, header[1], rows, sheet=sheet.title)
            if not blocks.items or blocks.items[-1].sheet != sheet.title:
                blocks.table([header[1]], sheet=sheet.title)  # a sheet with a header row only
        title = workbook.properties.title if workbook.properties else None
    finally:
        workbook.close()
    return finish(blocks, path, title=title, header_line=header_line)
