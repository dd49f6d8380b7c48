"""HTML with the standard library's tokenizer: h1-h6, p/li/dt/dd/pre, tables; scripts, styles and
navigation dropped. Exported QM pages (Confluence, SharePoint, Word "save as HTML") need no
more, and a lenient tokenizer never fails on broken markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from osprag.ingest.model import LoadedDocument

from ._shared import Blocks, decode_text, finish

_SKIP = frozenset(
    {
        "script",
        "style",
        "nav",
        "noscript",
        "template",
        "head",
        "title",
        "svg",
        "iframe",
        "select",
        "button",
    }
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "main",
        "header",
        "footer",
        "aside",
        "blockquote",
        "dt",
        "dd",
        "figcaption",
        "address",
        "form",
        "fieldset",
        "body",
        "html",
        "center",
        "details",
        "summary",
        "hr",
        "dl",
    }
)
_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_\-]+)", re.IGNORECASE)


class _Extractor(HTMLParser):
    def __init__(self, blocks: Blocks) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks = blocks
        self.skip_depth = 0
        self.text: list[str] = []
        self.heading: int | None = None
        self.pre = 0
        self.title_parts: list[str] = []
        self.in_title = False
        self.lists: list[list[str]] = []  # open ul/ol, each collecting its items
        self.ordered: list[bool] = []
        self.item: list[str] | None = None
        self.tables: list[list[list[str]]] = []  # open tables (nested ones are flattened)
        self.cell: list[str] | None = None

    # -- tags
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _SKIP:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag == "br":
            self._sink().append("\n")
        elif tag in _HEADINGS:
            self._flush()
            self.heading = _HEADINGS[tag]
        elif tag == "pre":
            self._flush()
            self.pre += 1
        elif tag in ("ul", "ol"):
            self._flush()
            self.lists.append([])
            self.ordered.append(tag == "ol")
        elif tag == "li":
            self._close_item()
            self.item = []
        elif tag == "table":
            self._flush()
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self.cell = []
        elif tag in _BLOCKS and self.cell is None and self.item is None:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag in _HEADINGS and self.heading is not None:
            self.blocks.heading("".join(self.text), self.heading)
            self.text.clear()
            self.heading = None
        elif tag == "pre" and self.pre:
            self.pre -= 1
            self.blocks.code("".join(self.text))
            self.text.clear()
        elif tag == "li":
            self._close_item()
        elif tag in ("ul", "ol") and self.lists:
            self._close_item()
            items, ordered = self.lists.pop(), self.ordered.pop()
            if ordered:
                items = [f"{n}. {text}" for n, text in enumerate(items, 1)]
            if self.lists:  # nested list: its items continue the outer item
                self.lists[-1].extend(items)
            else:
                self.blocks.list(items)
        elif tag in ("td", "th") and self.cell is not None and self.tables:
            if not self.tables[-1]:
                self.tables[-1].append([])
            self.tables[-1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table" and self.tables:
            rows = [r for r in self.tables.pop() if any(c.strip() for c in r)]
            if self.tables and self.cell is not None:  # nested table: flatten into the cell
                self.cell.append(" ".join(" / ".join(r) for r in rows))
            else:
                self.blocks.table(rows)
        elif tag in _BLOCKS and self.cell is None and self.item is None:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        if self.skip_depth:
            return
        self._sink().append(data if self.pre else re.sub(r"\s+", " ", data))

    # -- helpers
    def _sink(self) -> list[str]:
        if self.cell is not None:
            return self.cell
        if self.item is not None:
            return self.item
        return self.text

    def _close_item(self) -> None:
        if self.item is not None and self.lists:
            text = " ".join("".join(self.item).split())
            if text:
                self.lists[-1].append(text)
        elif self.item is not None:
            self.text.extend(self.item)
        self.item = None

    def _flush(self) -> None:
        text = "".join(self.text)
        self.text.clear()
        if self.heading is not None:
            self.blocks.heading(text, self.heading)
            self.heading = None
        elif text.strip():
            self.blocks.paragraph("\n".join(line.strip() for line in text.split("\n")))

    def close(self) -> None:
        super().close()
        while self.lists:
            self.handle_endtag("ol" if self.ordered[-1] else "ul")
        while self.tables:
            self.handle_endtag("table")
        self._flush()


def load_html(path: Path, data: bytes) -> LoadedDocument:
    declared = _CHARSET.search(data[:4096])
    warnings: list[str] = []
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        try:
            text = data.decode(declared.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            text, warnings = decode_text(data, path)
    else:
        text, warnings = decode_text(data, path)
    blocks = Blocks()
    parser = _Extractor(blocks)
    parser.feed(text)
    parser.close()
    title = next((b.text for b in blocks.items if b.kind == "heading" and b.level == 1), None)
    return finish(
        blocks, path, title=title or "".join(parser.title_parts).strip() or None, warnings=warnings
    )
