"""Build the binary documents of the sample corpus (PDF, DOCX, XLSX, PPTX) from Markdown sources.

    .venv/bin/python scripts/build_corpus.py            # writes examples/osp-corpus/<layer>/...
    .venv/bin/python scripts/build_corpus.py --check    # fails if a committed file is stale

Sources live in ``examples/osp-corpus/_sources/<format>/<name>.md``; the first line
``<!-- layer: kern|erweitert -->`` picks the output folder. The generated files are committed,
so the output is deterministic: fixed document dates, fixed ZIP timestamps and reportlab's
invariant mode give byte-identical files on every run with the same library versions.

Where each format keeps the QM header line (``Version: … | TAG: … | …``), as real exports do:

- PDF: first line of page 1, above the title.
- DOCX: first paragraph of the body, above the title.
- XLSX: cell A1 of the first sheet; the first table starts in row 3. Every sheet's table header
  is its first non-empty row.
- PPTX: subtitle of the title slide.

PDF text uses DejaVu Sans (Debian ``fonts-dejavu-core``) for umlauts, ², ±, ≥, ≤, →, ☐. Without
it the script falls back to Helvetica and transliterates what Latin-1 cannot show (≥ → >=).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "osp-corpus"
FIXED_DATE = dt.datetime(2025, 3, 1, 8, 0, 0)
ZIP_DATE = (2025, 3, 1, 8, 0, 0)
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
GENERATOR = "osprag scripts/build_corpus.py"

# --------------------------------------------------------------------------- Markdown source


@dataclass
class Item:
    """One block of a source document: heading, paragraph, bullets/numbered list or table."""

    kind: str  # heading | paragraph | bullets | numbers | table
    text: str = ""
    level: int = 0
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Source:
    name: str
    fmt: str
    layer: str
    title: str
    header_line: str
    body: list[Item]


_LAYER = re.compile(r"^<!--\s*layer:\s*(kern|erweitert)\s*-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBER = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_DELIM = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def parse_source(path: Path) -> Source:
    lines = path.read_text(encoding="utf-8").splitlines()
    match = _LAYER.match(lines[0]) if lines else None
    if not match:
        raise SystemExit(f"{path}: first line must be <!-- layer: kern|erweitert -->")
    layer = match.group(1)
    items: list[Item] = []
    i = 1
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            items.append(Item("heading", heading.group(2), level=len(heading.group(1))))
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _DELIM.match(lines[i + 1]):
            rows = [_cells(line)]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_cells(lines[i]))
                i += 1
            items.append(Item("table", rows=rows))
            continue
        for kind, pattern in (("bullets", _BULLET), ("numbers", _NUMBER)):
            if pattern.match(line):
                entries: list[str] = []
                while i < len(lines) and lines[i].strip():
                    entry = pattern.match(lines[i])
                    if entry:
                        entries.append(entry.group(1))
                    elif entries:  # continuation line of the previous entry
                        entries[-1] += " " + lines[i].strip()
                    i += 1
                items.append(Item(kind, items=entries))
                break
        else:
            para: list[str] = []
            while i < len(lines) and lines[i].strip() and not _HEADING.match(lines[i]):
                para.append(lines[i].strip())
                i += 1
            items.append(Item("paragraph", " ".join(para)))
    if len(items) < 2 or items[0].kind != "heading" or items[0].level != 1:
        raise SystemExit(f"{path}: expected '# Title' after the layer comment")
    if items[1].kind != "paragraph" or "|" not in items[1].text:
        raise SystemExit(f"{path}: expected the header line after the title")
    return Source(
        name=path.stem,
        fmt=path.parent.name,
        layer=layer,
        title=items[0].text,
        header_line=items[1].text,
        body=items[2:],
    )


def plain(text: str) -> str:
    """Markdown emphasis removed, for formats where the script sets bold itself."""
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text)


# --------------------------------------------------------------------------- deterministic ZIP


def deterministic_zip(data: bytes) -> bytes:
    """Rewrite an OOXML package with fixed timestamps and core-property dates."""
    stamp = FIXED_DATE.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            blob = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                blob = re.sub(
                    rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)",
                    lambda m: m.group(1) + stamp.encode() + m.group(3),
                    blob,
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, blob, compresslevel=9)
    return out.getvalue()


# --------------------------------------------------------------------------- PDF (reportlab)


_LATIN1_FALLBACK = {
    "≥": ">=", "≤": "<=", "→": "->", "☐": "[ ]", "−": "-", "–": "-", "—": "-", "„": '"',
    "“": '"', "”": '"', "\u0304": "", "š": "s", "í": "i", "á": "a",
}


def _pdf_fonts() -> tuple[str, str, bool]:
    """(regular, bold, unicode) font names; registers DejaVu Sans when the files exist."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = DEJAVU / "DejaVuSans.ttf", DEJAVU / "DejaVuSans-Bold.ttf"
    if regular.is_file() and bold.is_file():
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
        return "DejaVuSans", "DejaVuSans-Bold", True
    print("DejaVu fonts not found: using Helvetica, transliterating ≥ ≤ → ☐", file=sys.stderr)
    return "Helvetica", "Helvetica-Bold", False


def build_pdf(src: Source) -> bytes:
    from reportlab import rl_config
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        ListFlowable,
        ListItem,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )
    from reportlab.platypus.flowables import Flowable

    rl_config.invariant = 1  # fixed creation date and document id: identical bytes per run
    regular, bold, unicode_ok = _pdf_fonts()

    def esc(text: str) -> str:
        if not unicode_ok:
            for char, repl in _LATIN1_FALLBACK.items():
                text = text.replace(char, repl)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)

    body = ParagraphStyle("body", fontName=regular, fontSize=10, leading=13, spaceAfter=5,
                          alignment=TA_LEFT)
    meta = ParagraphStyle("meta", parent=body, fontSize=8, leading=10, spaceAfter=8,
                          textColor=colors.HexColor("#444444"))
    cell = ParagraphStyle("cell", parent=body, fontSize=8, leading=10, spaceAfter=0)
    cell_bold = ParagraphStyle("cellb", parent=cell, fontName=bold)
    sizes = {1: 17, 2: 13.5, 3: 11.5, 4: 10.5}
    heads = {
        level: ParagraphStyle(f"h{level}", parent=body, fontName=bold, fontSize=size,
                              leading=size * 1.25, spaceBefore=8 if level > 1 else 0,
                              spaceAfter=5)
        for level, size in sizes.items()
    }

    story: list[Flowable] = [Paragraph(esc(src.header_line), meta),
                             Paragraph(esc(src.title), heads[1])]
    width = A4[0] - 40 * mm
    for item in src.body:
        if item.kind == "heading":
            story.append(Paragraph(esc(item.text), heads[min(item.level, 4)]))
        elif item.kind == "paragraph":
            story.append(Paragraph(esc(item.text), body))
        elif item.kind in ("bullets", "numbers"):
            numbered = item.kind == "numbers"
            style = {"bulletType": "1", "bulletFormat": "%s."} if numbered else {
                "bulletType": "bullet", "start": "•"}
            story.append(ListFlowable(
                [ListItem(Paragraph(esc(e), body)) for e in item.items], **style,
                bulletFontName=bold if numbered else regular, bulletFontSize=9, leftIndent=14,
            ))
        elif item.kind == "table":
            ncols = max(len(r) for r in item.rows)
            data = [
                [Paragraph(esc(c), cell_bold if r == 0 else cell) for c in row]
                + [Paragraph("", cell)] * (ncols - len(row))
                for r, row in enumerate(item.rows)
            ]
            table = Table(data, colWidths=[width / ncols] * ncols, repeatRows=1)
            table.setStyle(TableStyle([
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]))
            story += [table, Spacer(1, 6)]

    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
        bottomMargin=18 * mm, title=src.title, author="Osprag Kabeltechnik GmbH",
        subject=src.header_line, creator=GENERATOR, producer=GENERATOR,
    )
    doc.build(story)
    return out.getvalue()


# --------------------------------------------------------------------------- DOCX (python-docx)


def build_docx(src: Source) -> bytes:
    from docx import Document
    from docx.shared import Pt

    doc = Document()
    core = doc.core_properties
    core.title, core.author, core.subject = src.title, "Osprag Kabeltechnik GmbH", ""
    core.keywords, core.comments, core.last_modified_by = "", GENERATOR, GENERATOR
    core.created = core.modified = FIXED_DATE
    core.revision = 1

    first = doc.add_paragraph(src.header_line)
    for run in first.runs:
        run.font.size = Pt(8)
    doc.add_heading(src.title, level=1)
    for item in src.body:
        if item.kind == "heading":
            doc.add_heading(plain(item.text), level=min(item.level, 9))
        elif item.kind == "paragraph":
            _docx_paragraph(doc, item.text, None)
        elif item.kind in ("bullets", "numbers"):
            style = "List Bullet" if item.kind == "bullets" else "List Number"
            for entry in item.items:
                _docx_paragraph(doc, entry, style)
        elif item.kind == "table":
            ncols = max(len(r) for r in item.rows)
            table = doc.add_table(rows=len(item.rows), cols=ncols)
            table.style = "Table Grid"
            for r, row in enumerate(item.rows):
                for c, text in enumerate(row):
                    cell = table.cell(r, c)
                    cell.text = plain(text)
                    if r == 0:
                        for run in cell.paragraphs[0].runs:
                            run.bold = True
    out = io.BytesIO()
    doc.save(out)
    return deterministic_zip(out.getvalue())


def _docx_paragraph(doc: object, text: str, style: str | None) -> None:
    """A paragraph with **bold** spans as bold runs."""
    para = doc.add_paragraph(style=style)  # type: ignore[attr-defined]
    for i, part in enumerate(re.split(r"\*\*(.+?)\*\*", text)):
        if part:
            run = para.add_run(part)
            run.bold = i % 2 == 1


# --------------------------------------------------------------------------- XLSX (openpyxl)

_INT = re.compile(r"^-?(0|[1-9]\d{0,8})$")  # "02" (a month) stays text


def _sheets(src: Source) -> Iterator[tuple[str, list[list[str]]]]:
    name: str | None = None
    for item in src.body:
        if item.kind == "heading" and item.text.startswith("Sheet:"):
            name = item.text.split(":", 1)[1].strip()
        elif item.kind == "table" and name:
            yield name, item.rows
            name = None


def build_xlsx(src: Source) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.worksheets[0])  # start without the default sheet
    props = wb.properties
    props.title, props.creator, props.lastModifiedBy = src.title, GENERATOR, GENERATOR
    props.created = props.modified = FIXED_DATE
    for index, (name, rows) in enumerate(_sheets(src)):
        ws = wb.create_sheet(title=name[:31])
        start = 1
        if index == 0:
            ws.cell(row=1, column=1, value=src.header_line).font = Font(size=8, italic=True)
            start = 3
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                value: str | int = int(text) if r > 0 and _INT.match(text) else plain(text)
                cell = ws.cell(row=start + r, column=c + 1, value=value)
                if r == 0:
                    cell.font = Font(bold=True)
        for c in range(max(len(r) for r in rows)):
            longest = max(len(row[c]) if c < len(row) else 0 for row in rows)
            ws.column_dimensions[get_column_letter(c + 1)].width = min(max(longest, 8) + 2, 60)
    out = io.BytesIO()
    wb.save(out)
    return deterministic_zip(out.getvalue())


# --------------------------------------------------------------------------- PPTX (python-pptx)


def build_pptx(src: Source) -> bytes:
    from pptx import Presentation
    from pptx.util import Emu, Inches, Pt

    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    core = prs.core_properties
    core.title, core.author, core.last_modified_by = src.title, GENERATOR, GENERATOR
    core.created = core.modified = FIXED_DATE
    core.revision = 1

    title_slide = prs.slides.add_slide(prs.slide_layouts[0])
    title_slide.shapes.title.text = src.title
    title_slide.placeholders[1].text = src.header_line
    for shape in title_slide.shapes:  # the default layout is 4:3; stretch to the 16:9 slide
        shape.left, shape.width = Inches(0.8), Inches(11.7)

    slides: list[tuple[str, list[Item]]] = []
    for item in src.body:
        if item.kind == "heading" and item.level == 2:
            slides.append((item.text, []))
        elif slides:
            slides[-1][1].append(item)
    left, width = Inches(0.6), Inches(12.1)
    for title, items in slides:
        slide = prs.slides.add_slide(prs.slide_layouts[5])  # "Title Only"
        slide.shapes.title.text = title
        slide.shapes.title.left, slide.shapes.title.width = left, width
        top: int = Inches(1.6)
        for item in items:
            if item.kind == "table":
                nrows, ncols = len(item.rows), max(len(r) for r in item.rows)
                height = Inches(0.32) * nrows
                shape = slide.shapes.add_table(nrows, ncols, left, top, width, height)
                for r, row in enumerate(item.rows):
                    for c, text in enumerate(row):
                        cell = shape.table.cell(r, c)
                        cell.text = plain(text)
                        for para in cell.text_frame.paragraphs:
                            for run in para.runs:
                                run.font.size = Pt(11)
                top = Emu(top + height + Inches(0.2))
                continue
            entries = item.items if item.kind in ("bullets", "numbers") else [item.text]
            height = Inches(0.4) * len(entries)
            box = slide.shapes.add_textbox(left, top, width, height)
            frame = box.text_frame
            frame.word_wrap = True
            for i, entry in enumerate(entries):
                para = frame.paragraphs[0] if i == 0 else frame.add_paragraph()
                prefix = "• " if item.kind == "bullets" else f"{i + 1}. " * (item.kind == "numbers")
                para.text = prefix + plain(entry)
                for run in para.runs:
                    run.font.size = Pt(16)
            top = Emu(top + height + Inches(0.15))
    out = io.BytesIO()
    prs.save(out)
    return deterministic_zip(out.getvalue())


# --------------------------------------------------------------------------- main

BUILDERS = {"pdf": build_pdf, "docx": build_docx, "xlsx": build_xlsx, "pptx": build_pptx}


def build_all(corpus: Path, check: bool = False) -> int:
    stale = 0
    for fmt, builder in BUILDERS.items():
        for source_path in sorted((corpus / "_sources" / fmt).glob("*.md")):
            src = parse_source(source_path)
            data = builder(src)
            target = corpus / src.layer / f"{src.name}.{fmt}"
            digest = hashlib.sha256(data).hexdigest()[:12]
            if check:
                same = target.is_file() and target.read_bytes() == data
                stale += not same
                print(f"{'ok   ' if same else 'STALE'} {target.relative_to(corpus)}")
                continue
            target.write_bytes(data)
            print(f"{target.relative_to(corpus)}  {len(data) / 1024:6.1f} KB  sha256 {digest}")
    return 1 if stale else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing")
    args = parser.parse_args()
    sys.exit(build_all(args.corpus, check=args.check))


if __name__ == "__main__":
    main()
