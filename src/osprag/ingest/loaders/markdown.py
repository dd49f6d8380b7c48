"""Markdown: YAML front matter, ATX/setext headings, paragraphs, lists, pipe tables, fenced code.

A small line parser instead of a CommonMark library: QM documents use a narrow subset, and the
loader needs block structure (headings, tables as tables), not HTML.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml

from osprag.ingest.model import LoadedDocument
from osprag.ingest.normalize import normalize_text

from ._shared import LIST_MARKER, Blocks, decode_text, finish

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RULE = re.compile(r"^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
_TABLE_DELIM = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image → alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link → link text
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"<br\s*/?>", re.IGNORECASE), " "),
]


def inline(text: str) -> str:
    """Emphasis, link and code markup removed: the embedding should see words, not syntax."""
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


def load_markdown(path: Path, data: bytes) -> LoadedDocument:
    text, warnings = decode_text(data, path)
    text = normalize_text(text, dehyphenate=False, collapse_spaces=False)  # blocks collapse
    metadata, text = _front_matter(text, warnings)
    text = _COMMENT.sub("", text)
    blocks = Blocks()
    _parse(text.split("\n"), blocks)
    return finish(blocks, path, metadata=metadata, warnings=warnings)


def _front_matter(text: str, warnings: list[str]) -> tuple[dict[str, Any], str]:
    if not text.startswith("---\n"):
        return {}, text
    match = re.search(r"^(---|\.\.\.)[ \t]*$", text[4:], re.MULTILINE)
    if not match:
        return {}, text
    raw, rest = text[4 : 4 + match.start()], text[4 + match.end() :]
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        warnings.append(f"front matter is not valid YAML{where}; ignored")
        return {}, rest
    if data is None:
        return {}, rest
    if not isinstance(data, dict):
        warnings.append("front matter is not a mapping; ignored")
        return {}, rest
    return {str(k): _jsonable(v) for k, v in data.items()}, rest


def _jsonable(value: Any) -> Any:
    """YAML dates and timestamps become ISO strings: the document crosses a process as JSON."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [inline(c.replace("\\|", "|")).strip() for c in re.split(r"(?<!\\)\|", line)]


def _parse(lines: list[str], blocks: Blocks) -> None:
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.paragraph(inline("\n".join(s.strip() for s in para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker = fence.group(1)
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            blocks.code("\n".join(body))
            i += 1
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            blocks.heading(inline(atx.group(2) or ""), len(atx.group(1)))
            i += 1
            continue
        if para and _SETEXT.match(line) and len(para) == 1:
            blocks.heading(inline(para[0]), 1 if stripped[0] == "=" else 2)
            para.clear()
            i += 1
            continue
        if _RULE.match(line):
            flush()
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _TABLE_DELIM.match(lines[i + 1]):
            flush()
            rows = [_cells(line)]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_cells(lines[i]))
                i += 1
            blocks.table(rows)
            continue
        if LIST_MARKER.match(line.lstrip()) and not para:
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                item = lines[i]
                if LIST_MARKER.match(item.lstrip()):
                    items.append(inline(item.strip()))
                elif items:
                    items[-1] += " " + inline(item.strip())
                i += 1
                if i < len(lines) and (_ATX.match(lines[i]) or _FENCE.match(lines[i])):
                    break
            blocks.list(items)
            continue
        if stripped.startswith(">"):
            line = stripped.lstrip(">").strip()
        para.append(line)
        i += 1
    flush()
