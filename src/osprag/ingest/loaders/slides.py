"""PPTX with python-pptx: per slide the title as a heading, text frames, tables and speaker
notes, all tagged with the slide number. Shapes are read top-to-bottom, left-to-right, which is
reading order on almost every slide; group shapes are opened."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument

from ._shared import Blocks, check_zip, finish


def _shapes(shapes: Any) -> Iterator[Any]:
    ordered = sorted(shapes, key=lambda s: ((s.top or 0) // 50000, s.left or 0))
    for shape in ordered:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _add_text_frame(blocks: Blocks, frame: Any, slide: int) -> None:
    paragraphs = [(p.level, "".join(r.text for r in p.runs) or p.text) for p in frame.paragraphs]
    paragraphs = [(level, text) for level, text in paragraphs if text.strip()]
    if len(paragraphs) > 1:
        blocks.list([("  " * level) + text for level, text in paragraphs], slide=slide)
    elif paragraphs:
        blocks.paragraph(paragraphs[0][1], slide=slide)


def load_pptx(path: Path, data: bytes) -> LoadedDocument:
    check_zip(data, path, "PPTX")
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(data))
    except PackageNotFoundError:
        raise IngestError("corrupt PPTX (not a PowerPoint package)", path=str(path)) from None
    except (KeyError, ValueError) as exc:
        raise IngestError(f"corrupt PPTX ({exc})", path=str(path)) from None

    blocks = Blocks()
    first_title: str | None = None
    for number, slide in enumerate(presentation.slides, 1):
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None else ""
        if title:
            blocks.heading(title, 1 if number == 1 else 2, slide=number)
            first_title = first_title or title
        for shape in _shapes(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                blocks.table(rows, slide=number)
            elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                _add_text_frame(blocks, shape.text_frame, number)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                blocks.paragraph(notes.text, slide=number)
    title = first_title or presentation.core_properties.title or None
    return finish(blocks, path, title=title)
