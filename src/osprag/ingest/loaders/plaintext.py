"""Plain text: paragraphs split at blank lines, underlined titles as headings, dash lists."""

from __future__ import annotations

import re
from pathlib import Path

from osprag.ingest.model import LoadedDocument
from osprag.ingest.normalize import normalize_text

from ._shared import LIST_MARKER, Blocks, decode_text, finish

# "1. ZWECK" over "--------": the setext style that text exports and typewriter habits produce.
_UNDERLINE = re.compile(r"^\s*(=+|-+)\s*$")


def load_txt(path: Path, data: bytes) -> LoadedDocument:
    text, warnings = decode_text(data, path)
    blocks = Blocks()
    for part in re.split(r"\n\s*\n", normalize_text(text)):
        add_text_part(blocks, part.split("\n"))
    return finish(blocks, path, warnings=warnings)


def add_text_part(blocks: Blocks, lines: list[str]) -> None:
    """One blank-line-separated part: may hold an underlined heading followed by its text."""
    pending: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        underline = _UNDERLINE.match(nxt)
        if line.strip() and underline and len(nxt.strip()) >= min(3, len(line.strip())):
            _flush(blocks, pending)
            pending = []
            blocks.heading(line, 1 if underline.group(1)[0] == "=" else 2)
            i += 2
            continue
        pending.append(line)
        i += 1
    _flush(blocks, pending)


def _flush(blocks: Blocks, lines: list[str]) -> None:
    lines = [line for line in lines if line.strip()]
    if not lines:
        return
    if LIST_MARKER.match(lines[0].lstrip()):
        items: list[str] = []
        for line in lines:
            if LIST_MARKER.match(line.lstrip()) or not items:
                items.append(line.strip())
            else:  # an indented continuation of the item above
                items[-1] += " " + line.strip()
        blocks.list(items)
        return
    blocks.paragraph("\n".join(lines))
