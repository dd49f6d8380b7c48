"""The data passed between loaders, the chunker and the sync engine.

Loaders run in a resource-limited worker process, so everything here is plain data that
crosses a process boundary as JSON (never pickle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

BlockKind = Literal["heading", "paragraph", "table", "rows", "list", "code"]


@dataclass
class Block:
    """One structural unit of a document, in reading order.

    ``heading``: ``level`` 1..6, ``text`` the heading text.
    ``table``: ``text`` is the table rendered as Markdown-like rows (``a | b | c``), header first.
    ``rows``: a spreadsheet/CSV row range; ``header`` holds the column header line that the
    chunker repeats in each chunk, ``text`` one line per row.
    Location fields are set when the format has them: ``page`` (PDF, 1-based), ``sheet`` and
    ``row_start``/``row_end`` (XLSX/CSV, 1-based, data rows), ``slide`` (PPTX, 1-based).
    """

    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None
    sheet: str | None = None
    row_start: int | None = None
    row_end: int | None = None
    slide: int | None = None
    header: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Block:
        return cls(**data)


@dataclass
class LoadedDocument:
    """What a loader extracted from one file."""

    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)  # front matter / header line / props
    title: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. "page 3: no text layer, needs OCR"
    pages: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocks": [b.to_dict() for b in self.blocks],
            "metadata": self.metadata,
            "title": self.title,
            "warnings": self.warnings,
            "pages": self.pages,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadedDocument:
        return cls(
            blocks=[Block.from_dict(b) for b in data["blocks"]],
            metadata=dict(data.get("metadata") or {}),
            title=data.get("title"),
            warnings=list(data.get("warnings") or []),
            pages=data.get("pages"),
        )


@dataclass
class Chunk:
    """A piece of a document sized for the embedding model, with where it came from."""

    text: str
    index: int
    heading_path: list[str] = field(default_factory=list)
    page: int | None = None
    page_end: int | None = None
    sheet: str | None = None
    row_start: int | None = None
    row_end: int | None = None
    slide: int | None = None
    char_start: int = 0
    char_end: int = 0
    tokens: int = 0
