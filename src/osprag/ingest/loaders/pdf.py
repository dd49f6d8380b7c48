"""PDF with pypdf (BSD, pure Python): text per page with page numbers, headings from font size,
tables from column alignment, and a warning for every page that has no text layer.

Two passes per page: pypdf's *layout* mode gives lines with their horizontal positions (table
columns stay apart, bullets stay on their line), and a *plain* pass with a text visitor gives
each line's font size. Lines set clearly larger than the body text become headings; their
levels follow the distinct heading sizes of the whole document. Limits: no reading order for
multi-column pages beyond what the PDF stream gives, running headers/footers stay in the text,
bold body-size headings stay paragraphs.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument
from osprag.ingest.normalize import normalize_text

from ._shared import LIST_MARKER, Blocks, finish

OCR_HINT = (
    "run OCR first, e.g. `ocrmypdf -l deu+eng --skip-text in.pdf out.pdf` "
    "(Debian: apt-get install ocrmypdf tesseract-ocr-deu), and ingest the result"
)
_HEADING_RATIO = 1.15  # a line this much larger than the body text is a heading


@dataclass
class _PageText:
    number: int
    lines: list[str]
    sizes: dict[str, float] = field(default_factory=dict)  # line key → font size


def _key(text: str) -> str:
    return "".join(text.split())


def _font_sizes(page: Any, counter: Counter[float]) -> dict[str, float]:
    """Plain extraction with a visitor: font size of each output line (its smallest glyphs)."""
    sizes: dict[str, float] = {}
    chars: list[tuple[str, float]] = []

    def end_line() -> None:
        text = "".join(c for c, _ in chars if not c.isspace())
        if text:
            size = min(s for c, s in chars if not c.isspace())
            sizes.setdefault(text, size)
        chars.clear()

    def visit(text: str, cm: Any, tm: Any, font: Any, font_size: Any) -> None:
        try:
            scale = math.hypot(tm[2] * cm[0] + tm[3] * cm[2], tm[2] * cm[1] + tm[3] * cm[3])
            size = round(float(font_size) * scale * 2) / 2
        except (TypeError, ValueError, IndexError):
            size = 0.0
        for char in text:
            if char == "\n":
                end_line()
            else:
                chars.append((char, size))
                if not char.isspace():
                    counter[size] += 1

    page.extract_text(visitor_text=visit)
    end_line()
    return sizes


def _page_text(page: Any, number: int, counter: Counter[float], warnings: list[str]) -> _PageText:
    try:
        text = page.extract_text(extraction_mode="layout", layout_mode_space_vertically=False)
    except Exception:  # layout mode is stricter about fonts; plain mode still gives the words
        try:
            text = page.extract_text()
        except Exception as exc:
            warnings.append(f"page {number}: text extraction failed ({type(exc).__name__})")
            return _PageText(number, [])
    lines = [line.rstrip() for line in text.replace("\r", "").split("\n")]
    sizes: dict[str, float] = {}
    if any(line.strip() for line in lines):
        try:
            sizes = _font_sizes(page, counter)
        except Exception:  # sizes only refine headings; the text is already there
            sizes = {}
    return _PageText(number, lines, sizes)


def _has_visible_content(page: Any) -> bool:
    try:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        return bool(xobjects) or bool(page.get("/Contents"))
    except Exception:
        return True  # when in doubt, warn rather than silently skip


def _heading_levels(pages: list[_PageText], counter: Counter[float]) -> dict[float, int]:
    if not counter:
        return {}
    body = counter.most_common(1)[0][0]
    used = {
        size
        for page in pages
        for key, size in page.sizes.items()
        if size >= body * _HEADING_RATIO and len(key) <= 200
    }
    return {size: min(rank, 6) for rank, size in enumerate(sorted(used, reverse=True), 1)}


_CELL = re.compile(r"\S+(?: {1,2}\S+)*")  # words separated by at most two spaces


def _segments(line: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in _CELL.finditer(line)]


def _table_at(lines: list[str], start: int) -> tuple[list[list[str]], int] | None:
    """Rows of an aligned table starting at ``lines[start]``, and the index after it."""
    head = _segments(lines[start])
    if len(head) < 2:
        return None
    columns = [pos for pos, _ in head]
    rows: list[list[str]] = [[text for _, text in head]]
    full_rows = 1
    i = start + 1
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        segs = _segments(line)
        aligned = all(any(abs(pos - col) <= 2 for col in columns) for pos, _ in segs)
        if not aligned:
            break
        cells = [""] * len(columns)
        for pos, text in segs:
            index = min(range(len(columns)), key=lambda c: abs(columns[c] - pos))
            cells[index] = (cells[index] + " " + text).strip()
        if segs[0][0] > columns[0] + 2:  # first column empty: continuation of wrapped cells
            rows[-1] = [(a + " " + b).strip() for a, b in zip(rows[-1], cells, strict=True)]
        elif len(segs) >= 2:
            rows.append(cells)
            full_rows += 1
        else:
            break
        i += 1
    if full_rows < 2:
        return None
    while i > start and not lines[i - 1].strip():
        i -= 1
    return rows, i


def _text_items(lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    """("paragraph"|"list", lines) from running text: bullets start items, indented lines
    continue them, a short line ending a sentence ends a paragraph."""
    width = max((len(line.strip()) for line in lines), default=0)
    kind, indent = "paragraph", 0
    current: list[str] = []
    for raw in lines:
        stripped = raw.strip()
        if not stripped:
            if current:
                yield kind, current
            kind, current = "paragraph", []
            continue
        lead = len(raw) - len(raw.lstrip())
        if LIST_MARKER.match(stripped):
            if kind == "paragraph" and current:
                yield kind, current
                current = []
            kind, indent = "list", lead
            current.append(stripped)
            continue
        if kind == "list":
            if lead > indent:
                current[-1] += "\n" + stripped
                continue
            yield kind, current
            kind, current = "paragraph", []
        current.append(stripped)
        if stripped[-1] in ".:!?" and len(stripped) < 0.7 * width:
            yield kind, current
            current = []
    if current:
        yield kind, current


def _emit_page(blocks: Blocks, page: _PageText, levels: dict[float, int]) -> None:
    pending: list[str] = []

    def flush() -> None:
        for kind, lines in _text_items(pending):
            if kind == "list":
                blocks.list([normalize_text(item) for item in lines], page=page.number)
            else:
                blocks.paragraph("\n".join(lines), page=page.number)
        pending.clear()

    last_heading: tuple[int, int] | None = None  # (block index, level) for wrapped headings
    i = 0
    while i < len(page.lines):
        line = page.lines[i]
        level = levels.get(page.sizes.get(_key(line), 0.0)) if line.strip() else None
        if level is not None:
            flush()
            previous = blocks.items[-1] if blocks.items else None
            if last_heading == (len(blocks.items) - 1, level) and previous is not None:
                previous.text = f"{previous.text} {' '.join(line.split())}"
            else:
                blocks.heading(line, level, page=page.number)
                last_heading = (len(blocks.items) - 1, level)
            i += 1
            continue
        if line.strip():
            last_heading = None
        table = _table_at(page.lines, i) if line.strip() else None
        if table is not None:
            flush()
            rows, i = table
            blocks.table(rows, page=page.number)
            continue
        pending.append(line)
        i += 1
    flush()


def _metadata_title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return None
    if not isinstance(title, str) or not title.strip():
        return None
    return re.sub(r"^Microsoft (Word|PowerPoint|Excel) - ", "", title.strip()) or None


def _open(path: Path, data: bytes) -> Any:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    if b"%PDF-" not in data[:1024]:
        raise IngestError("not a PDF (no %PDF- header)", path=str(path))
    try:
        reader = PdfReader(io.BytesIO(data))
    except (
        PdfReadError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        RecursionError,
        AssertionError,
        OSError,
    ) as exc:
        raise IngestError(f"corrupt PDF ({_reason(exc)})", path=str(path)) from None
    if reader.is_encrypted:
        try:
            result = reader.decrypt("")  # owner-password-only PDFs open without a password
        except DependencyError:
            raise IngestError(
                "encrypted PDF (AES) and the 'cryptography' package is missing", path=str(path)
            ) from None
        except (PdfReadError, NotImplementedError, ValueError, KeyError) as exc:
            raise IngestError(f"encrypted PDF ({_reason(exc)})", path=str(path)) from None
        if result == PasswordType.NOT_DECRYPTED:
            raise IngestError(
                "encrypted PDF (password required)",
                path=str(path),
                hint="store an unprotected copy, e.g. qpdf --decrypt --password=PW in.pdf out.pdf",
            )
    return reader


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_pdf(path: Path, data: bytes) -> LoadedDocument:
    reader = _open(path, data)
    try:
        page_count = len(reader.pages)
    except Exception as exc:
        raise IngestError(f"corrupt PDF ({_reason(exc)})", path=str(path)) from None
    if page_count == 0:
        raise IngestError("PDF has no pages", path=str(path))

    warnings: list[str] = []
    counter: Counter[float] = Counter()
    pages: list[_PageText] = []
    for number in range(1, page_count + 1):
        try:
            page = reader.pages[number - 1]
        except Exception as exc:
            warnings.append(f"page {number}: unreadable ({_reason(exc)})")
            continue
        text = _page_text(page, number, counter, warnings)
        if not any(line.strip() for line in text.lines):
            if _has_visible_content(page):
                warnings.append(f"page {number}: no text layer, needs OCR")
            continue
        pages.append(text)
    if not pages:
        raise IngestError("no text layer (scanned PDF?), needs OCR", path=str(path), hint=OCR_HINT)

    levels = _heading_levels(pages, counter)
    blocks = Blocks()
    for page_text in pages:
        _emit_page(blocks, page_text, levels)
    return finish(blocks, path, title=_metadata_title(reader), warnings=warnings, pages=page_count)
