"""Loaders against real files: written here with the format libraries, the sample corpus, and
the bad-file set (tests/fixtures/make_bad_files.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from osprag.errors import IngestError
from osprag.ingest.loaders import SUPPORTED_SUFFIXES, load_file
from osprag.ingest.loaders._shared import ROWS_PER_BLOCK, looks_like_header_line
from osprag.ingest.model import Block, LoadedDocument
from tests.fixtures.make_bad_files import EXPECTED, make_bad_files, text_pdf

HEADER = (
    "Version: 2.1 | TAG: [QM][REK] | Autor: AL | Zugriff: L3 | Status: AKTIV "
    "| gültig ab: 2025-03-01"
)
CORPUS = Path(__file__).resolve().parents[1] / "examples" / "osp-corpus"
CORPUS_FILES = sorted(
    p for p in CORPUS.glob("*/*") if p.suffix in SUPPORTED_SUFFIXES and p.parent.name != "_sources"
)


def kinds(doc: LoadedDocument) -> list[str]:
    return [b.kind for b in doc.blocks]


def find(doc: LoadedDocument, kind: str, contains: str = "") -> Block:
    return next(b for b in doc.blocks if b.kind == kind and contains in b.text)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad"))


# --------------------------------------------------------------------------- header line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (HEADER, True),
        ("Version: 1.0 | Status: ENTWURF", True),
        ("| Version: 1.0 | Status: AKTIV |", False),  # a Markdown table row
        ("Hinweis: bitte beachten", False),  # one pair is a sentence, not a header line
        ("a | b | c", False),
        ("Crimphöhe: 0,80 mm | Auszugskraft ≥ 50 N", False),
    ],
)
def test_header_line_detection(line: str, expected: bool) -> None:
    assert looks_like_header_line(line) is expected


# --------------------------------------------------------------------------- Markdown


def test_markdown_structure_front_matter_and_header_line(tmp_path: Path) -> None:
    source = tmp_path / "QM_REK_8D.md"
    source.write_text(
        "---\ntitle: 8D\nerstellt: 2025-01-05\ntags: [QM, REK]\n---\n"
        f"# Reklamations- und 8D-Prozess\n\n{HEADER}\n\n## 1 Zweck\n\n"
        "Diese Anweisung regelt **8D** mit [Links](http://x) und `code`.\nZweite Zeile.\n\n"
        "- Punkt eins\n  fortgesetzt\n- Punkt zwei\n\n1. Schritt\n2. Schritt\n\n"
        "| Querschnitt | Crimphöhe |\n|---|:---:|\n| 0,35 mm² | 0,80 ± 0,03 mm |\n"
        "| a \\| b | x |\n\n"
        "```text\nD3  24 h\n```\n\nSetext\n------\n\n***\n\n### Ende ###\n",
        encoding="utf-8",
    )
    doc = load_file(source)
    assert doc.metadata == {
        "title": "8D",
        "erstellt": "2025-01-05",
        "tags": ["QM", "REK"],
        "header_line": HEADER,
    }
    assert doc.title == "Reklamations- und 8D-Prozess"
    assert kinds(doc) == [
        "heading",
        "heading",
        "paragraph",
        "list",
        "list",
        "table",
        "code",
        "heading",
        "heading",
    ]
    assert [b.level for b in doc.blocks if b.kind == "heading"] == [1, 2, 2, 3]
    assert doc.blocks[2].text == "Diese Anweisung regelt 8D mit Links und code.\nZweite Zeile."
    assert doc.blocks[3].text == "- Punkt eins fortgesetzt\n- Punkt zwei"
    assert doc.blocks[4].text == "1. Schritt\n2. Schritt"
    assert doc.blocks[5].text == "Querschnitt | Crimphöhe\n0,35 mm² | 0,80 ± 0,03 mm\na / b | x"
    assert doc.blocks[6].text == "D3  24 h"  # code keeps its spacing
    assert HEADER not in json.dumps([b.text for b in doc.blocks], ensure_ascii=False)
    json.dumps(doc.to_dict())  # crosses the process boundary as JSON


def test_markdown_bad_front_matter_is_a_warning(tmp_path: Path) -> None:
    source = tmp_path / "x.md"
    source.write_text("---\ntitle: [unclosed\n---\n# Titel\n\nText\n", encoding="utf-8")
    doc = load_file(source)
    assert doc.metadata == {} and doc.title == "Titel"
    assert any("front matter" in w for w in doc.warnings)


# --------------------------------------------------------------------------- TXT


def test_txt_underlined_headings_lists_and_header_line(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(
        (
            "\ufeff" + HEADER + "\r\n\r\nPRÜFANWEISUNG\r\n=============\r\n\r\n"
            "1. ZWECK\r\n--------\r\nDie Crimp-\r\nhöhe wird gemessen.\r\n\r\n"
            "- Gerät A (Messbereich\r\n  0-1000 N)\r\n- Gerät B\r\n"
        ).encode("utf-8")
    )
    doc = load_file(source)
    assert doc.metadata["header_line"] == HEADER
    assert doc.title == "PRÜFANWEISUNG"
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("heading", "PRÜFANWEISUNG"),
        ("heading", "1. ZWECK"),
        ("paragraph", "Die Crimphöhe wird gemessen."),
        ("list", "- Gerät A (Messbereich 0-1000 N)\n- Gerät B"),
    ]


def test_txt_cp1252_is_accepted_with_a_warning(tmp_path: Path) -> None:
    source = tmp_path / "alt.txt"
    source.write_bytes("Prüfmittel für Größe „Crimphöhe“ – 5 €".encode("cp1252"))
    doc = load_file(source)
    assert doc.blocks[0].text == "Prüfmittel für Größe „Crimphöhe“ – 5 €"
    assert doc.warnings == ["not UTF-8: decoded as Windows-1252 (cp1252)"]


def test_txt_utf16_with_bom(tmp_path: Path) -> None:
    source = tmp_path / "notepad.txt"
    source.write_bytes("Prüfung".encode("utf-16"))
    assert load_file(source).blocks[0].text == "Prüfung"


# --------------------------------------------------------------------------- CSV


def test_csv_semicolon_rows_blocks_and_meta_file(tmp_path: Path) -> None:
    source = tmp_path / "PMU_KAL.csv"
    rows = [f"PM-{i:03d};Mikrometer;0,001 mm" for i in range(1, ROWS_PER_BLOCK + 6)]
    source.write_text(
        "Prüfmittel-Nr;Bezeichnung;Auflösung\n" + "\n".join(rows) + "\n\n", encoding="utf-8"
    )
    (tmp_path / "PMU_KAL.csv.meta").write_text(HEADER + "\n", encoding="utf-8")
    doc = load_file(source)
    assert doc.metadata == {"header_line": HEADER}
    assert kinds(doc) == ["rows", "rows"]
    first, second = doc.blocks
    assert first.header == "Prüfmittel-Nr | Bezeichnung | Auflösung"
    assert first.text.split("\n")[0] == "PM-001 | Mikrometer | 0,001 mm"
    assert (first.row_start, first.row_end) == (2, ROWS_PER_BLOCK + 1)  # header is row 1
    assert (second.row_start, second.row_end) == (ROWS_PER_BLOCK + 2, ROWS_PER_BLOCK + 6)


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_csv_other_delimiters_and_header_line_as_first_line(tmp_path: Path, delimiter: str) -> None:
    source = tmp_path / "x.csv"
    lines = [
        HEADER,
        delimiter.join(["Nr", "Merkmal", "Wert"]),
        delimiter.join(["1", '"Crimphöhe, gemessen"', "0.80"]),
    ]
    source.write_text("\n".join(lines), encoding="utf-8")
    doc = load_file(source)
    assert doc.metadata["header_line"] == HEADER
    assert doc.blocks[0].header == "Nr | Merkmal | Wert"
    assert doc.blocks[0].text == "1 | Crimphöhe, gemessen | 0.80"
    assert doc.blocks[0].row_start == 3


# --------------------------------------------------------------------------- HTML


def test_html_drops_scripts_and_navigation(tmp_path: Path) -> None:
    source = tmp_path / "x.html"
    source.write_text(
        "<html><head><title>Seitentitel</title><style>p{}</style><script>var x=1;</script>"
        f"</head><body><nav><a href='/'>Start</a></nav><p class='meta'>{HEADER}</p>"
        "<h1>SPC &amp; Regelkarten</h1><p>Erster<br>Absatz mit&nbsp;x&#772;</p>"
        "<ul><li>eins</li><li>zwei<ul><li>zwei-a</li></ul></li></ul><ol><li>erst</li><li>dann</li></ol>"
        "<table><thead><tr><th>Merkmal</th><th>Karte</th></tr></thead>"
        "<tbody><tr><td>Crimphöhe</td><td>x̄-R</td></tr></tbody></table>"
        "<h3>Unterpunkt</h3><div>Text im div</div><script>alert(1)</script></body></html>",
        encoding="utf-8",
    )
    doc = load_file(source)
    assert doc.metadata == {"header_line": HEADER}
    assert doc.title == "SPC & Regelkarten"
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("heading", "SPC & Regelkarten"),
        ("paragraph", "Erster\nAbsatz mit x̄"),
        ("list", "- eins\n- zwei\n- zwei-a"),
        ("list", "1. erst\n2. dann"),
        ("table", "Merkmal | Karte\nCrimphöhe | x̄-R"),
        ("heading", "Unterpunkt"),
        ("paragraph", "Text im div"),
    ]
    assert doc.blocks[-2].level == 3


def test_html_without_h1_uses_the_title_element(tmp_path: Path) -> None:
    source = tmp_path / "x.htm"
    source.write_bytes("<title>Alt</title><p>Größe</p>".encode("cp1252"))
    doc = load_file(source)
    assert doc.title == "Alt" and doc.blocks[0].text == "Größe"


# --------------------------------------------------------------------------- DOCX


def test_docx_headings_lists_tables_and_header_line(tmp_path: Path) -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE

    document = docx.Document()
    document.core_properties.title = "Änderungsmanagement"
    document.add_paragraph(HEADER)
    document.add_heading("Änderungsmanagement", level=1)
    german = document.styles.add_style("Überschrift 2", WD_STYLE_TYPE.PARAGRAPH)
    custom = document.styles.add_style("QM Kapitel", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Heading 3"]
    document.add_paragraph("1 Zweck", style=german)
    document.add_paragraph("Änderungen werden bewertet.")
    document.add_paragraph("Form, Passung", style="List Bullet")
    document.add_paragraph("Funktion", style="List Bullet")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate(
        [
            ["Art", "Auslöser", "Beispiel"],
            ["Kunde", "Index", "B → C"],
            ["Prozess", "Maschine", "neu"],
        ]
    ):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    table.cell(2, 1).merge(table.cell(2, 2))
    document.add_paragraph("1.1 Unterkapitel", style=custom)
    path = tmp_path / "QM_AEM.docx"
    document.save(str(path))

    doc = load_file(path)
    assert doc.title == "Änderungsmanagement"
    assert doc.metadata == {"header_line": HEADER}
    assert [(b.kind, b.level, b.text) for b in doc.blocks] == [
        ("heading", 1, "Änderungsmanagement"),
        ("heading", 2, "1 Zweck"),
        ("paragraph", 0, "Änderungen werden bewertet."),
        ("list", 0, "- Form, Passung\n- Funktion"),
        ("table", 0, "Art | Auslöser | Beispiel\nKunde | Index | B → C\nProzess | Maschine neu"),
        ("heading", 3, "1.1 Unterkapitel"),
    ]


def test_docx_header_line_in_the_page_header(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    section = document.sections[0]
    section.header.is_linked_to_previous = False
    section.header.paragraphs[0].text = HEADER
    document.add_paragraph("Nur Text.")
    path = tmp_path / "h.docx"
    document.save(str(path))
    doc = load_file(path)
    assert doc.metadata == {"header_line": HEADER}
    assert doc.blocks == [Block("paragraph", "Nur Text.")]


# --------------------------------------------------------------------------- XLSX


def test_xlsx_sheets_rows_and_header_line_in_a1(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    first = workbook.active
    first.title = "Systemaudits"
    first["A1"] = HEADER
    first.append([])
    first.append(["Audit-Nr", "Datum", "Erfüllung", "Punkte", ""])
    first.append(["SA-25-01", dt.datetime(2025, 2, 3), 0.92, 12.0])
    first["C4"].number_format = "0%"
    for i in range(ROWS_PER_BLOCK):
        first.append([f"SA-25-{i + 2:02d}", "offen", None, i])
    second = workbook.create_sheet("Leer")
    del second
    third = workbook.create_sheet("Nur Kopf")
    third.append(["Spalte A", "Spalte B"])
    workbook.properties.title = "Auditprogramm"
    path = tmp_path / "QM_AUD.xlsx"
    workbook.save(str(path))

    doc = load_file(path)
    assert doc.title == "Auditprogramm"
    assert doc.metadata == {"header_line": HEADER}
    assert kinds(doc) == ["rows", "rows", "table"]
    rows = doc.blocks[0]
    assert rows.sheet == "Systemaudits" and rows.header == "Audit-Nr | Datum | Erfüllung | Punkte"
    assert rows.text.split("\n")[0] == "SA-25-01 | 2025-02-03 | 92 % | 12"
    assert rows.text.split("\n")[1] == "SA-25-02 | offen |  | 0"  # empty cell kept
    assert (rows.row_start, rows.row_end) == (4, 3 + ROWS_PER_BLOCK)
    assert (doc.blocks[1].row_start, doc.blocks[1].row_end) == (
        4 + ROWS_PER_BLOCK,
        4 + ROWS_PER_BLOCK,
    )
    assert doc.blocks[2] == Block("table", "Spalte A | Spalte B", sheet="Nur Kopf")


# --------------------------------------------------------------------------- PPTX


def test_pptx_slides_titles_tables_and_notes(tmp_path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    title = presentation.slides.add_slide(presentation.slide_layouts[0])
    title.shapes.title.text = "Schulung Crimpqualität"
    title.placeholders[1].text = HEADER
    content = presentation.slides.add_slide(presentation.slide_layouts[1])
    content.shapes.title.text = "Crimphöhe"
    frame = content.placeholders[1].text_frame
    frame.text = "Messen bei Rüsten"
    frame.add_paragraph().text = "alle 2 h"
    frame.paragraphs[1].level = 1
    shape = content.shapes.add_table(2, 2, Inches(1), Inches(5), Inches(6), Inches(1))
    for r, row in enumerate([["Querschnitt", "Crimphöhe"], ["0,35 mm²", "0,80 ± 0,03 mm"]]):
        for c, text in enumerate(row):
            shape.table.cell(r, c).text = text
    content.notes_slide.notes_text_frame.text = "Grenzmuster zeigen."
    path = tmp_path / "HR_QUA.pptx"
    presentation.save(str(path))

    doc = load_file(path)
    assert doc.title == "Schulung Crimpqualität"
    assert doc.metadata == {"header_line": HEADER}
    assert [(b.kind, b.slide, b.text) for b in doc.blocks] == [
        ("heading", 1, "Schulung Crimpqualität"),
        ("heading", 2, "Crimphöhe"),
        ("list", 2, "- Messen bei Rüsten\n- alle 2 h"),
        ("table", 2, "Querschnitt | Crimphöhe\n0,35 mm² | 0,80 ± 0,03 mm"),
        ("paragraph", 2, "Grenzmuster zeigen."),
    ]


# --------------------------------------------------------------------------- PDF


def test_pdf_pages_headings_tables_and_header_line() -> None:
    doc = load_file(CORPUS / "kern" / "QM_HB_QM-Handbuch.pdf")
    assert doc.pages == 3 and doc.warnings == []
    assert doc.title == "QM-Handbuch der Osprag Kabeltechnik GmbH"
    assert doc.metadata["header_line"].startswith("Version: 7.0 | TAG: [QM][HB]")
    headings = [(b.level, b.text, b.page) for b in doc.blocks if b.kind == "heading"]
    assert headings[:3] == [
        (1, "QM-Handbuch der Osprag Kabeltechnik GmbH", 1),
        (2, "1 Zweck des Handbuchs", 1),
        (2, "2 Geltungsbereich", 1),
    ]
    assert (3, "5.1 Organigramm (vereinfacht)", 2) in headings
    table = find(doc, "table", "Merkmal")
    assert table.page == 1
    assert "Mitarbeitende | 412 | 636" in table.text.split("\n")
    assert (
        "Kernprozesse | Ablängen, Abisolieren, Crimpen, Ultraschallschweißen | "
        "Vormontage, Kabelsatzmontage, Leitungsprüfung" in table.text.split("\n")
    )
    assert find(doc, "list", "Geschäftsführung").text.startswith("• Geschäftsführung (GF)")
    assert all(b.page in (1, 2, 3) for b in doc.blocks)


def test_pdf_symbols_survive() -> None:
    doc = load_file(CORPUS / "erweitert" / "QM_WE_Wareneingangspruefung-AQL.pdf")
    text = "\n".join(b.text for b in doc.blocks)
    for symbol in ("≤", "mm²", "ü", "ß"):
        assert symbol in text


def test_pdf_with_an_owner_password_only_opens(tmp_path: Path) -> None:
    from tests.fixtures.make_bad_files import encrypted_pdf

    path = tmp_path / "restricted.pdf"
    path.write_bytes(encrypted_pdf("", owner_password="owner"))
    assert load_file(path).blocks[0].text == "Geheime Crimpdaten"


def test_pdf_page_without_text_layer_is_a_warning_not_silence(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pdf"
    path.write_bytes(text_pdf(["Seite eins", "", "Seite drei"]))
    doc = load_file(path)
    assert doc.warnings == ["page 2: no text layer, needs OCR"]
    assert [(b.text, b.page) for b in doc.blocks] == [("Seite eins", 1), ("Seite drei", 3)]


# --------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_every_corpus_document_loads_with_header_line_and_title(path: Path) -> None:
    doc = load_file(path)
    assert looks_like_header_line(doc.metadata["header_line"])
    assert doc.warnings == []
    assert doc.blocks and all(b.text.strip() for b in doc.blocks)
    assert not any(doc.metadata["header_line"] in b.text for b in doc.blocks)
    if path.suffix != ".csv":
        assert doc.title
    assert LoadedDocument.from_dict(json.loads(json.dumps(doc.to_dict()))) == doc


def test_corpus_binaries_are_all_generated() -> None:
    sources = sorted(p.stem for p in (CORPUS / "_sources").glob("*/*.md"))
    built = sorted(p.stem for p in CORPUS_FILES if p.suffix in (".pdf", ".docx", ".xlsx", ".pptx"))
    assert built == sources


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=str)
def test_bad_files_give_a_clear_error(bad_files: dict[str, Path], name: str) -> None:
    path = bad_files[name]
    if name == "unreadable.md" and os.access(path, os.R_OK):
        pytest.skip("running as root: chmod 000 does not stop reading")
    if name == "partly-scanned.pdf":
        doc = load_file(path)
        assert EXPECTED[name] in doc.warnings
        return
    with pytest.raises(IngestError) as info:
        load_file(path, max_bytes=50 * 1024 * 1024)
    message = str(info.value)
    assert EXPECTED[name] in message
    assert message.startswith(str(path))
    assert "Traceback" not in message and len(message) < 400 + len(str(path))


def test_scanned_pdf_error_names_the_ocr_tools(bad_files: dict[str, Path]) -> None:
    with pytest.raises(IngestError) as info:
        load_file(bad_files["scanned.pdf"])
    assert info.value.hint is not None
    assert "ocrmypdf" in info.value.hint and "tesseract-ocr-deu" in info.value.hint


def test_directory_and_fifo_are_not_regular_files(tmp_path: Path) -> None:
    folder = tmp_path / "ordner.md"
    folder.mkdir()
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for path in (folder, fifo):
        with pytest.raises(IngestError, match="not a regular file"):
            load_file(path)


def test_permission_denied_reason_without_needing_a_non_root_user() -> None:
    import errno

    from osprag.ingest.loaders import os_error_reason

    assert os_error_reason(PermissionError(errno.EACCES, "denied")) == (
        "cannot open: permission denied"
    )
    assert os_error_reason(OSError(errno.ELOOP, "loop")) == "cannot open: symlink loop"
