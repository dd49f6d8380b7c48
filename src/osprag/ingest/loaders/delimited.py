"""CSV: delimiter sniffed (German Excel exports use ``;``), first row as column header, data in
``rows`` blocks. A sibling ``<file>.meta`` holds the QM header line, because a CSV has no place
for it that a spreadsheet program would keep."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument
from osprag.ingest.normalize import normalize_inline

from ._shared import Blocks, decode_text, emit_rows, finish, looks_like_header_line

_DELIMITERS = ";,\t|"
csv.field_size_limit(16 * 1024 * 1024)


def sniff_delimiter(sample: str) -> str:
    """The sniffer first; when it gives up, the delimiter that splits the first lines evenly."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        pass
    lines = [line for line in sample.splitlines()[:20] if line.strip()]
    best, best_score = ";", 0
    for delim in _DELIMITERS:
        counts = [line.count(delim) for line in lines]
        if counts and min(counts) > 0:
            score = min(counts) * (2 if len(set(counts)) == 1 else 1)
            if score > best_score:
                best, best_score = delim, score
    return best


def read_meta_file(path: Path) -> str | None:
    meta = path.with_name(path.name + ".meta")
    if not meta.is_file():
        return None
    try:
        text, _ = decode_text(meta.read_bytes()[:65536], meta)
    except (OSError, IngestError):
        return None
    return next((normalize_inline(line) for line in text.splitlines() if line.strip()), None)


def load_csv(path: Path, data: bytes) -> LoadedDocument:
    text, warnings = decode_text(data, path)
    header_line = read_meta_file(path)
    offset = 0
    first, _, rest = text.partition("\n")
    if looks_like_header_line(first):  # the header line as the file's first line
        header_line = header_line or normalize_inline(first)
        text, offset = rest, 1
    delimiter = sniff_delimiter(text[:16384])
    records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    numbered = ((n + offset, r) for n, r in enumerate(records, 1) if any(c.strip() for c in r))
    blocks = Blocks()
    try:
        header = next(numbered, None)
        if header is not None:
            emit_rows(blocks, header[1], numbered)  # streamed: a big CSV is never all in lists
            if not blocks.items:  # a header row only: keep it as a one-row table
                blocks.table([header[1]])
    except csv.Error as exc:
        raise IngestError(f"malformed CSV ({exc})", path=str(path)) from None
    return finish(blocks, path, header_line=header_line, warnings=warnings)
