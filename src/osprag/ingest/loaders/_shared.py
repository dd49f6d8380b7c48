"""What every format loader needs: normalised block building, the QM header line, text decoding,
archive checks and the final assembly of a ``LoadedDocument``."""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from osprag.errors import IngestError
from osprag.ingest.model import Block, LoadedDocument
from osprag.ingest.normalize import normalize_inline, normalize_text

# Rows of a spreadsheet or CSV per ``rows`` block: small enough for one chunk of a wide sheet,
# large enough that a 10,000-row register does not become 10,000 blocks.
ROWS_PER_BLOCK = 25

# A ZIP member (DOCX/XLSX/PPTX) that inflates this much is refused before any XML parser sees it.
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024
MAX_MEMBER_RATIO = 200  # deflate on real XML reaches 10-30:1; zip bombs reach 1000:1

LIST_MARKER = re.compile(r"^(?:[-*+•▪◦–]|\d{1,3}[.)])\s+")
_HEADER_PAIR = re.compile(r"^[^\W\d_][\w .\-/()]{0,39}:\s*\S")


def looks_like_header_line(line: str) -> bool:
    """``Version: 2.1 | TAG: [QM][REK] | Autor: AL`` — two or more ``Key: value`` pairs.

    Stricter than a parser would need: a Markdown table row (leading ``|``) or a sentence with
    a colon must not be taken for document metadata and dropped from the text.
    """
    text = line.strip()
    if not text or text.startswith("|") or len(text) > 400:
        return False
    parts = [p.strip() for p in text.split("|")]
    return len(parts) >= 2 and all(_HEADER_PAIR.match(p) for p in parts)


class Blocks:
    """Collects blocks in reading order; normalises text and drops blocks that end up empty."""

    def __init__(self) -> None:
        self.items: list[Block] = []

    def heading(self, text: str, level: int, **where: Any) -> None:
        text = normalize_inline(text)
        if text:
            self.items.append(Block("heading", text, level=max(1, min(level, 6)), **where))

    def paragraph(self, text: str, **where: Any) -> None:
        self._add("paragraph", normalize_text(text), where)

    def list(self, items: Iterable[str], **where: Any) -> None:
        """Items keep their own marker ("- ", "3. "); items without one get "- "."""
        lines = [normalize_inline(i) for i in items]
        self._add(
            "list", "\n".join(i if LIST_MARKER.match(i) else f"- {i}" for i in lines if i), where
        )

    def code(self, text: str, **where: Any) -> None:
        self._add("code", normalize_text(text, dehyphenate=False, collapse_spaces=False), where)

    def table(self, rows: Sequence[Sequence[str]], **where: Any) -> None:
        lines = [row_text(r) for r in rows]
        self._add("table", "\n".join(line for line in lines if line.strip(" |")), where)

    def rows(self, header: str, rows: Sequence[str], start: int, end: int, **where: Any) -> None:
        if rows:
            self.items.append(
                Block("rows", "\n".join(rows), header=header, row_start=start, row_end=end, **where)
            )

    def _add(self, kind: Any, text: str, where: dict[str, Any]) -> None:
        if text.strip():
            self.items.append(Block(kind, text, **where))


def emit_rows(
    blocks: Blocks, header: list[str], rows: Iterable[tuple[int, list[str]]], **where: Any
) -> None:
    """Data rows in ``rows`` blocks of ``ROWS_PER_BLOCK``, each carrying the column header.

    Row numbers are what the user sees: the spreadsheet row, or the CSV line of the record.
    """
    header_text = row_text(header)
    batch: list[str] = []
    start = end = 0
    for number, cells in rows:
        line = row_text(cells)
        if not line:
            continue
        if not batch:
            start = number
        batch.append(line)
        end = number
        if len(batch) >= ROWS_PER_BLOCK:
            blocks.rows(header_text, batch, start, end, **where)
            batch = []
    blocks.rows(header_text, batch, start, end, **where)


def _cell(text: str) -> str:
    # Most spreadsheet cells are short ASCII: skip the full normalisation (10x faster on a
    # 50 MB CSV) when it could not change anything but surrounding spaces.
    if text.isascii() and text.isprintable() and "  " not in text:
        return text.strip().replace("|", "/")
    return normalize_inline(text).replace("|", "/")


def row_text(cells: Sequence[str]) -> str:
    """A table or sheet row as ``a | b | c``; the chunker and the reader both see columns."""
    values = [_cell(c) for c in cells]
    while values and not values[-1]:
        values.pop()
    return " | ".join(values)


def split_header_line(blocks: list[Block]) -> tuple[list[Block], str | None]:
    """Take the QM header line out of the text if it is the first text line of the document.

    Headings before it are allowed (Markdown puts it under the ``# Title``). Only the line is
    removed: a paragraph that continues below it keeps the rest.
    """
    for index, block in enumerate(blocks):
        if block.kind == "heading":
            if looks_like_header_line(block.text):
                return blocks[:index] + blocks[index + 1 :], block.text
            continue
        if block.kind not in ("paragraph", "list"):
            return blocks, None
        first, _, rest = block.text.partition("\n")
        candidate = first[2:] if block.kind == "list" and first.startswith("- ") else first
        if not looks_like_header_line(candidate):
            return blocks, None
        remaining = list(blocks)
        if rest.strip():
            remaining[index] = Block(**{**block.to_dict(), "text": rest.strip("\n")})
        else:
            del remaining[index]
        return remaining, normalize_inline(candidate)
    return blocks, None


def finish(
    blocks: Blocks | list[Block],
    path: Path,
    *,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
    pages: int | None = None,
    header_line: str | None = None,
) -> LoadedDocument:
    """Header line out of the text, title fallback to the first H1, refusal of empty documents."""
    items = blocks.items if isinstance(blocks, Blocks) else blocks
    items, found = split_header_line(items)
    meta = dict(metadata or {})
    line = header_line or found
    if line:
        meta["header_line"] = line
    if not items:
        raise IngestError("no text content found", path=str(path))
    if not title:
        title = next((b.text for b in items if b.kind == "heading" and b.level == 1), None)
    return LoadedDocument(
        blocks=items,
        metadata=meta,
        title=normalize_inline(title) if title else None,
        warnings=list(warnings or []),
        pages=pages,
    )


# --------------------------------------------------------------------------- text decoding

_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1a")  # \x1a: DOS end-of-file in old exports


def decode_text(data: bytes, path: Path) -> tuple[str, list[str]]:
    """UTF-8 (BOM or not), UTF-16 with BOM, or Windows-1252 when the bytes are plausible text.

    QM exports from older German Windows tools are often cp1252; cp1252 decodes almost any byte
    string, so it is only accepted when the result looks like text and not like a binary file
    renamed to .txt.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError as exc:
            raise IngestError(f"invalid UTF-16 text ({exc.reason})", path=str(path)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    sample = data[:65536]
    controls = sum(1 for b in sample if b < 32 and b not in _TEXT_CONTROLS)
    if b"\x00" in sample or controls > max(2, len(sample) // 100):
        raise IngestError(
            "binary content, not text",
            path=str(path),
            hint="the file contains NUL or control bytes; is the extension right?",
        )
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = ""
    if text and _plausible_latin_text(text):
        return text, ["not UTF-8: decoded as Windows-1252 (cp1252)"]
    raise IngestError(
        f"not valid UTF-8 (byte 0x{data[utf8_error.start]:02x} at offset {utf8_error.start}) "
        "and not plausible Windows-1252 text",
        path=str(path),
        hint="re-save the file as UTF-8",
    )


_LATIN_TYPOGRAPHY = frozenset("ÄÖÜ„“”‚‘’…•–—€°²³±µ§·×\u00a0")


def _plausible_latin_text(text: str) -> bool:
    non_ascii = [c for c in text if ord(c) > 127]
    if len(non_ascii) > len(text) * 0.3:
        return False
    # Umlauts, ß, typographic quotes and dashes are what cp1252 text contains; a random byte
    # string decodes to symbols and accented capitals such as "Ã", "©", "¾".
    good = sum(1 for c in non_ascii if unicodedata.category(c) == "Ll" or c in _LATIN_TYPOGRAPHY)
    return good >= len(non_ascii) * 0.8


# --------------------------------------------------------------------------- archives


def check_zip(data: bytes, path: Path, what: str) -> None:
    """Refuse an OOXML file that is not a ZIP or that would inflate past the limits."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise IngestError(
            f"corrupt {what} (not a valid ZIP package: {exc})", path=str(path)
        ) from None
    except (OSError, ValueError, EOFError) as exc:
        raise IngestError(f"corrupt {what} ({exc})", path=str(path)) from None
    total = sum(m.file_size for m in members)
    if total > MAX_UNZIPPED_BYTES:
        raise IngestError(
            f"{what} inflates to {total / 2**20:.0f} MB (limit {MAX_UNZIPPED_BYTES // 2**20} MB);"
            " zip bomb?",
            path=str(path),
        )
    for member in members:
        if member.file_size > 10 * 2**20 and member.file_size > MAX_MEMBER_RATIO * max(
            member.compress_size, 1
        ):
            raise IngestError(
                f"{what} member {member.filename} inflates "
                f"{member.file_size // max(member.compress_size, 1)}:1 to "
                f"{member.file_size / 2**20:.0f} MB; zip bomb?",
                path=str(path),
            )
