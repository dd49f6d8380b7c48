"""The chunker: token budget, structure, German sentence boundaries, tables, rows, overlap."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osprag.embedding import bundled_minilm_path
from osprag.ingest.chunking import (
    DEFAULT_HEADING_PREFIX,
    DEFAULT_MAX_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    PATH_SEPARATOR,
    Chunker,
    TokenCounter,
    TokenizerCounter,
    document_text,
    sentence_spans,
    word_spans,
)
from osprag.ingest.model import Block, Chunk

GERMANQUAD = Path(__file__).resolve().parents[2] / "shared" / "eval" / "germanquad-dev"


@pytest.fixture(scope="module")
def counter() -> TokenizerCounter:
    folder = bundled_minilm_path()
    assert folder is not None
    return TokenizerCounter(folder)


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def split_text(chunk: Chunk, doc: str) -> tuple[str, str]:
    """(prefix + repeated header, document slice) of a chunk; fails if the text isn't that."""
    body = doc[chunk.char_start : chunk.char_end]
    assert chunk.text.endswith(body), (chunk.text, body)
    return chunk.text[: len(chunk.text) - len(body)], body


def strip_prefix(chunk: Chunk) -> str:
    prefix = PATH_SEPARATOR.join(chunk.heading_path) + "\n"
    return chunk.text[len(prefix) :] if chunk.text.startswith(prefix) else chunk.text


# ---------------------------------------------------------------- token counting


def test_counter_ignores_the_files_padding_and_counts_words_additively(
    counter: TokenizerCounter,
) -> None:
    # MiniLM's tokenizer.json pads and truncates to 128; a naive count would say 128 here.
    assert counter.special_tokens == 2
    assert counter.additive
    text = "Die Crimphöhe beträgt 0,35 mm² ±0,03 mm, z. B. bei Kontakt Nr. 7 (i.O.)."
    assert counter.count(["Hallo", ""]) == [2, 0]  # hall ##o
    from tokenizers import Tokenizer

    folder = bundled_minilm_path()
    assert folder is not None
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    long = " ".join([text] * 40)
    assert counter.count([text, long]) == [
        len(tok.encode(text, add_special_tokens=False).ids),
        len(tok.encode(long, add_special_tokens=False).ids),
    ]
    assert counter.count([long])[0] > 128


def test_budget_reserves_special_tokens_and_passage_prefix(counter: TokenizerCounter) -> None:
    assert Chunker(counter, 1000, 0, max_seq_length=256).budget == 254
    prefix = counter.count(["passage: "])[0]
    chunker = Chunker(counter, 1000, 0, max_seq_length=256, passage_prefix="passage: ")
    assert chunker.budget == 254 - prefix
    assert Chunker(counter, 128, 0, max_seq_length=256).budget == 128
    folder = bundled_minilm_path()
    assert folder is not None
    assert Chunker.for_model(folder, 1000).budget == 254
    assert Chunker(folder / "tokenizer.json", 1000, 0).budget == 254
    assert Chunker(counter, 100, 80).overlap_tokens == 50  # clamped to half the budget
    with pytest.raises(ValueError):
        Chunker(counter, 8, 0)


def test_defaults_are_exported() -> None:
    assert 16 <= DEFAULT_MAX_TOKENS <= 254
    assert 0 <= DEFAULT_OVERLAP_TOKENS <= DEFAULT_MAX_TOKENS // 2
    assert isinstance(DEFAULT_HEADING_PREFIX, bool)


# ---------------------------------------------------------------- sentences


def test_german_abbreviations_do_not_end_sentences() -> None:
    text = (
        "Das Gehäuse ist z. B. aus PA66 gefertigt. Der Wert beträgt ca. 5 mm. "
        "Siehe Nr. 12 bzw. Abs. 3 der Norm. Das Teil ist i.O. und wird geliefert. "
        "Dr. Müller prüft im 19. Jahrhundert gebaute Anlagen. Heinrich IV. Er regierte. "
        "Es geschah 1999. Danach kam u.a. der Audit nach Art. 5 DSGVO!"
    )
    assert sentences(text) == [
        "Das Gehäuse ist z. B. aus PA66 gefertigt.",
        "Der Wert beträgt ca. 5 mm.",
        "Siehe Nr. 12 bzw. Abs. 3 der Norm.",
        "Das Teil ist i.O. und wird geliefert.",
        "Dr. Müller prüft im 19. Jahrhundert gebaute Anlagen.",
        "Heinrich IV. Er regierte.",  # a Roman numeral reads as a regnal number
        "Es geschah 1999.",
        "Danach kam u.a. der Audit nach Art. 5 DSGVO!",
    ]


def test_numbers_units_and_list_numbering() -> None:
    text = (
        "1. Querschnitt prüfen: 0,35 mm². Die Toleranz liegt bei ±0,03 mm. "
        "Wie hoch ist die Kraft? Mindestens 40 N.\n2. Crimphöhe messen"
    )
    assert sentences(text) == [
        "1. Querschnitt prüfen: 0,35 mm².",
        "Die Toleranz liegt bei ±0,03 mm.",
        "Wie hoch ist die Kraft?",
        "Mindestens 40 N.",
        "2. Crimphöhe messen",
    ]
    words = [text[a:b] for a, b in word_spans(text, 0, len(text))]
    assert "0,35 mm²." in words and "±0,03 mm." in words and "40 N." in words


def test_long_sentence_is_cut_between_words_keeping_number_and_unit(
    counter: TokenizerCounter,
) -> None:
    sentence = " ".join(
        f"Leitung {i} mit 0,35 mm² und ±0,03 mm Toleranz wird geprüft" for i in range(30)
    )
    blocks = [Block("paragraph", sentence + ".")]
    chunks = Chunker(counter, 24, 0, heading_prefix=False).chunk(blocks)
    assert len(chunks) > 5
    doc = document_text(blocks)
    source_words = set(doc.split())
    for c in chunks:
        assert c.tokens <= 24
        assert set(c.text.split()) <= source_words
        assert not c.text.startswith("mm")  # a unit stays with its number
        assert c.text.split()[-1] not in ("0,35", "±0,03")


# ---------------------------------------------------------------- structure


def test_heading_paths_and_prefix(counter: TokenizerCounter) -> None:
    blocks = [
        Block("heading", "Arbeitsanweisung Crimpen", level=1),
        Block("paragraph", "Gilt für alle Linien."),
        Block("heading", "Prüfung", level=2),
        Block("heading", "Crimphöhe", level=3),
        Block("paragraph", "Die Crimphöhe wird mit dem Bügelmessschieber gemessen."),
        Block("heading", "Leer", level=2),
        Block("heading", "Freigabe", level=2),
        Block("paragraph", "Der Schichtleiter gibt frei."),
    ]
    chunks = Chunker(counter, 128, 0, heading_prefix=True).chunk(blocks)
    assert [c.heading_path for c in chunks] == [
        ["Arbeitsanweisung Crimpen"],
        ["Arbeitsanweisung Crimpen", "Prüfung", "Crimphöhe"],
        ["Arbeitsanweisung Crimpen", "Freigabe"],
    ]
    assert chunks[0].text == "Arbeitsanweisung Crimpen\nGilt für alle Linien."
    assert chunks[1].text == (
        "Arbeitsanweisung Crimpen > Prüfung > Crimphöhe\n"
        "Die Crimphöhe wird mit dem Bügelmessschieber gemessen."
    )
    # An empty sibling section is not an ancestor, so its heading stays in the text.
    assert chunks[2].text == "Arbeitsanweisung Crimpen > Freigabe\nLeer\n\nFreigabe\n\n" + (
        "Der Schichtleiter gibt frei."
    )
    plain = Chunker(counter, 128, 0, heading_prefix=False).chunk(blocks)
    assert plain[1].text == (
        "Prüfung\n\nCrimphöhe\n\nDie Crimphöhe wird mit dem Bügelmessschieber gemessen."
    )
    doc = document_text(blocks)
    for c in plain:
        assert c.text == doc[c.char_start : c.char_end]


def test_sections_are_not_mixed_unless_asked(counter: TokenizerCounter) -> None:
    blocks = [
        Block("heading", "A", level=2),
        Block("paragraph", "Erster Abschnitt."),
        Block("heading", "B", level=2),
        Block("paragraph", "Zweiter Abschnitt."),
    ]
    assert len(Chunker(counter, 128, 0).chunk(blocks)) == 2
    merged = Chunker(counter, 128, 0, heading_prefix=False, section_level=1).chunk(blocks)
    assert [c.text for c in merged] == ["A\n\nErster Abschnitt.\n\nB\n\nZweiter Abschnitt."]


def test_paragraphs_packed_greedily_and_split_at_sentences(counter: TokenizerCounter) -> None:
    short = [Block("paragraph", f"Kurzer Absatz Nummer {i}.") for i in range(6)]
    packed = Chunker(counter, 64, 0, heading_prefix=False).chunk(short)
    assert len(packed) == 1 and packed[0].text.count("\n\n") == 5
    para = " ".join(f"Der Satz {i} beschreibt die Prüfung der Crimphöhe." for i in range(20))
    chunks = Chunker(counter, 48, 0, heading_prefix=False).chunk([Block("paragraph", para)])
    assert len(chunks) > 2
    for c in chunks:
        assert c.text.startswith("Der Satz") and c.text.endswith("Crimphöhe.")
        assert c.tokens <= 48


def test_overlap_repeats_whole_sentences_within_a_section_only(
    counter: TokenizerCounter,
) -> None:
    para = " ".join(f"Satz {i} nennt ein Merkmal." for i in range(30))
    blocks = [
        Block("heading", "Eins", level=2),
        Block("paragraph", para),
        Block("heading", "Zwei", level=2),
        Block("paragraph", para),
    ]
    doc = document_text(blocks)
    chunks = Chunker(counter, 48, 16, heading_prefix=True).chunk(blocks)
    first_of_two = next(c for c in chunks if c.heading_path == ["Zwei"])
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        prev_sentences = sentences(strip_prefix(prev))
        nxt_sentences = sentences(strip_prefix(nxt))
        if nxt is first_of_two:
            assert nxt.char_start > prev.char_end  # no overlap across sections
            continue
        assert nxt.char_start < prev.char_end
        carried = doc[nxt.char_start : prev.char_end]
        assert carried == " ".join(prev_sentences[-len(sentences(carried)) :])
        assert nxt_sentences[0] in prev_sentences
        assert 0 < counter.count([carried])[0] <= 16
    no_overlap = Chunker(counter, 48, 0, heading_prefix=True).chunk(blocks)
    assert len(no_overlap) < len(chunks)
    for prev, nxt in zip(no_overlap, no_overlap[1:], strict=False):
        assert nxt.char_start > prev.char_end


def test_overlap_of_one_long_sentence_carries_its_last_words(counter: TokenizerCounter) -> None:
    long = " ".join(f"Wort{i}" for i in range(40)) + "."
    blocks = [Block("paragraph", f"{long} {long} {long}")]
    chunks = Chunker(counter, 100, 10, heading_prefix=False).chunk(blocks)
    doc = document_text(blocks)
    assert len(chunks) >= 2
    nxt = chunks[1]
    assert nxt.char_start < chunks[0].char_end
    assert doc[nxt.char_start - 1] == " "  # starts at a word boundary
    assert counter.count([doc[nxt.char_start : chunks[0].char_end]])[0] <= 10


def test_table_kept_whole_when_it_fits(counter: TokenizerCounter) -> None:
    table = "Merkmal | Soll | Ist\n--- | --- | ---\nHöhe | 1,2 mm | 1,21 mm\nBreite | 2 mm | 2 mm"
    blocks = [Block("paragraph", "Messwerte:"), Block("table", table)]
    chunks = Chunker(counter, 128, 32, heading_prefix=False).chunk(blocks)
    assert [c.text for c in chunks] == [f"Messwerte:\n\n{table}"]


def test_long_table_split_by_rows_with_header_repeated(counter: TokenizerCounter) -> None:
    header = "Merkmal | Sollwert | Toleranz | Prüfmittel\n--- | --- | --- | ---"
    rows = [f"Maß {i} | {i},50 mm | ±0,03 mm | Messschieber {i}" for i in range(60)]
    blocks = [
        Block("heading", "Prüfplan", level=1),
        Block("paragraph", "Die folgenden Merkmale werden geprüft."),
        Block("table", "\n".join([header, *rows]), page=4),
        Block("paragraph", "Ende des Prüfplans."),
    ]
    doc = document_text(blocks)
    chunker = Chunker(counter, 96, 32, heading_prefix=True)
    chunks = chunker.chunk(blocks)
    table_chunks = [c for c in chunks if "Maß " in c.text]
    assert len(table_chunks) > 3
    seen: list[str] = []
    for c in table_chunks:
        assert c.tokens <= 96
        lines = strip_prefix(c).split("\n")
        if c is not table_chunks[0]:
            assert "\n".join(lines[:2]) == header
            head, body = split_text(c, doc)
            assert head.endswith(header + "\n")
            assert body.startswith("Maß ")  # the slice starts at a row: no overlap in tables
        seen.extend(line for line in lines if line.startswith("Maß "))
        assert c.page == 4
    assert seen == rows
    assert chunks[-1].text.endswith("Ende des Prüfplans.")


def test_rows_chunked_with_header_and_row_numbers(counter: TokenizerCounter) -> None:
    header = "Teilenummer;Bezeichnung;Lieferant;Status"
    lines = [f"4711-{i:03d};Stecker {i} polig;Zulieferer {i % 7};freigegeben" for i in range(80)]
    blocks = [
        Block("heading", "Lieferantenliste", level=1),
        Block("rows", "\n".join(lines), sheet="Tabelle1", row_start=2, row_end=81, header=header),
    ]
    chunks = Chunker(counter, 80, 32, heading_prefix=True).chunk(blocks)
    assert len(chunks) > 3
    expected_row = 2
    for c in chunks:
        assert c.sheet == "Tabelle1"
        assert c.heading_path == ["Lieferantenliste"]
        assert c.text.startswith("Lieferantenliste\n" + header + "\n")
        assert c.row_start == expected_row and c.row_end is not None
        body = strip_prefix(c)[len(header) + 1 :].split("\n")
        assert body == lines[c.row_start - 2 : c.row_end - 1]
        expected_row = c.row_end + 1
        assert c.tokens <= 80
    assert expected_row == 82


def test_page_ranges_and_locations(counter: TokenizerCounter) -> None:
    blocks = [Block("paragraph", f"Seite {p} beschreibt Schritt {p}.", page=p) for p in (1, 2, 3)]
    blocks += [Block("paragraph", "Folie.", slide=1), Block("paragraph", "Folie zwei.", slide=2)]
    chunks = Chunker(counter, 128, 0).chunk(blocks)
    assert (chunks[0].page, chunks[0].page_end) == (1, 3)
    assert [(c.slide, c.text) for c in chunks[1:]] == [(1, "Folie."), (2, "Folie zwei.")]


def test_empty_and_heading_only_documents(counter: TokenizerCounter) -> None:
    chunker = Chunker(counter, 64, 16)
    assert chunker.chunk([]) == []
    assert chunker.chunk([Block("paragraph", "  \n ")]) == []
    only = chunker.chunk([Block("heading", "Nur ein Titel", level=1)])
    assert [(c.text, c.heading_path, c.index) for c in only] == [
        ("Nur ein Titel", ["Nur ein Titel"], 0)
    ]


def test_deterministic(counter: TokenizerCounter) -> None:
    blocks = [Block("heading", "T", level=1)] + [
        Block("paragraph", " ".join(f"Satz {i}.{j} ist hier." for j in range(9))) for i in range(9)
    ]
    a = Chunker(counter, 40, 12).chunk(blocks)
    b = Chunker(counter, 40, 12).chunk(blocks)
    assert a == b


class CharCounter:
    """A tokenizer whose counts don't add up over words: exercises the exact recount path."""

    special_tokens = 2
    additive = False

    def count(self, texts: Sequence[str]) -> list[int]:
        return [math.ceil(len(t) / 3) for t in texts]


def test_non_additive_counter_still_respects_the_budget() -> None:
    assert isinstance(CharCounter(), TokenCounter)
    blocks = [Block("heading", "Abschnitt", level=1)] + [
        Block("paragraph", " ".join(f"Wort{i}x{j} ab cd." for j in range(40))) for i in range(5)
    ]
    chunks = Chunker(CharCounter(), 40, 8).chunk(blocks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.tokens == CharCounter().count([c.text])[0] <= 40


@pytest.mark.skipif(not GERMANQUAD.is_dir(), reason="eval data not present")
def test_germanquad_paragraphs_chunk_fast() -> None:
    docs = [
        json.loads(line)
        for line in (GERMANQUAD / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    blocks = [[Block("paragraph", p) for p in re.split(r"\n\s*\n", d["text"])] for d in docs]
    folder = bundled_minilm_path()
    assert folder is not None
    chunker = Chunker.for_model(folder)  # a cold word cache: the worst case
    started = time.process_time()  # CPU time: the machine may be busy with other tests
    chunks = [chunker.chunk(b) for b in blocks]
    elapsed = time.process_time() - started
    assert len(docs) == 474 and sum(map(len, chunks)) >= 474
    assert elapsed < 1.5, elapsed  # ~0.5 s cold, ~0.1 s with a warm word cache


# ---------------------------------------------------------------- properties


WORD = re.compile(r"\w+")


def is_mid_word(doc: str, offset: int) -> bool:
    """A cut between two word characters (a space-free CSV row may be cut after its ';')."""
    return 0 < offset < len(doc) and doc[offset - 1].isalnum() and doc[offset].isalnum()


def blocks_in(blocks: list[Block], start: int, end: int) -> list[Block]:
    """Blocks whose text overlaps document offsets [start, end)."""
    out, pos = [], 0
    for b in blocks:
        if pos < end and start < pos + len(b.text):
            out.append(b)
        pos += len(b.text) + 2
    return out


def block_at(blocks: list[Block], offset: int) -> Block:
    """The block whose text holds document offset ``offset``."""
    pos = 0
    for b in blocks:
        if pos <= offset < pos + len(b.text):
            return b
        pos += len(b.text) + 2
    raise AssertionError(f"offset {offset} is in no block")


WORDS = [
    "Crimphöhe", "Prüfung", "der", "die", "und", "Messschieber", "0,35", "mm²", "±0,03", "mm",
    "z.", "B.", "ca.", "Nr.", "i.O.", "bzw.", "Lieferant", "IATF", "16949", "Audit", "x",
    "Überprüfung", "Maßnahme", "8D-Report", "(FMEA)", "—", "Schichtstufenlandschaft",
]  # fmt: skip
word = st.one_of(
    st.sampled_from(WORDS), st.text("abcdefghijklmnopqrstuvwxyzäöüß", min_size=1, max_size=12)
)
sentence = st.builds(
    lambda ws, end: " ".join(ws) + end,
    st.lists(word, min_size=1, max_size=40),
    st.sampled_from([".", "!", "?", "", ":"]),
)
paragraph = st.builds(
    lambda ss, sep: sep.join(ss),
    st.lists(sentence, min_size=1, max_size=8),
    st.sampled_from([" ", "\n", "  "]),
)
heading = st.builds(
    lambda ws, lvl: Block("heading", " ".join(ws), level=lvl),
    st.lists(word, min_size=1, max_size=5),
    st.integers(1, 3),
)
table = st.builds(
    lambda rows: Block("table", "\n".join(" | ".join(r) for r in rows)),
    st.lists(st.lists(word, min_size=1, max_size=4), min_size=1, max_size=25),
)
rows_block = st.builds(
    lambda rows, hdr, first: Block(
        "rows", "\n".join(";".join(r) for r in rows), row_start=first, header=hdr
    ),
    st.lists(st.lists(word, min_size=1, max_size=4), min_size=1, max_size=25),
    st.one_of(st.none(), st.builds(";".join, st.lists(word, min_size=1, max_size=4))),
    st.integers(1, 50),
)
code = st.builds(
    lambda lines: Block("code", "\n".join(lines)),
    st.lists(st.builds(lambda n, s: " " * n + s, st.integers(0, 8), sentence), min_size=1),
)
block = st.one_of(
    heading,
    st.builds(lambda t, p: Block("paragraph", t, page=p), paragraph, st.integers(1, 9)),
    st.builds(lambda t, s: Block("list", t, slide=s), paragraph, st.sampled_from([None, 1, 2])),
    table,
    rows_block,
    code,
)


@settings(
    max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    blocks=st.lists(block, max_size=12),
    max_tokens=st.integers(20, 120),
    overlap=st.integers(0, 40),
    prefix=st.booleans(),
    section_level=st.sampled_from([1, 6]),
)
def test_chunk_properties(
    counter: TokenizerCounter,
    blocks: list[Block],
    max_tokens: int,
    overlap: int,
    prefix: bool,
    section_level: int,
) -> None:
    chunker = Chunker(
        counter, max_tokens, overlap, heading_prefix=prefix, section_level=section_level
    )
    chunks = chunker.chunk(blocks)
    doc = document_text(blocks)
    source_words = set(WORD.findall(doc))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    covered = [False] * len(doc)
    last_start = last_end = -1
    for c in chunks:
        # size: the stored count is exact and within the budget
        assert c.tokens == counter.count([c.text])[0] <= chunker.budget
        # text = heading prefix + repeated header + a slice of the document, cut between words
        head, body = split_text(c, doc)
        assert body.strip() == body and body
        assert not is_mid_word(doc, c.char_start) and not is_mid_word(doc, c.char_end)
        assert set(WORD.findall(body)) <= source_words
        # the head is the heading path (or its tail) then a repeated header line, each optional
        source = block_at(blocks, c.char_start)
        repeat = {""}
        if source.kind == "rows" and source.header:
            repeat = {source.header + "\n"}  # every rows chunk repeats its header...
            if counter.count([source.header])[0] > chunker.budget // 4:
                repeat.add("")  # ...unless it would crowd out the rows
        elif source.kind == "table":
            repeat.add(source.text.split("\n")[0] + "\n")
        paths = {""} | {
            PATH_SEPARATOR.join(c.heading_path[k:]) + "\n" for k in range(len(c.heading_path))
        }
        assert any(head == p + r for p in (paths if prefix else {""}) for r in repeat), head
        if source.kind == "rows":
            assert c.row_start is not None and c.row_end is not None
            assert c.row_start >= (source.row_start or 1) and c.row_end >= c.row_start
            assert c.row_end - c.row_start == body.count("\n")
        # order: chunks advance through the document
        assert c.char_start >= last_start and c.char_end > last_end
        last_start, last_end = c.char_start, c.char_end
        for i in range(c.char_start, c.char_end):
            covered[i] = True
        # one slide per chunk; pages run from page to page_end
        slides = {
            b.slide for b in blocks_in(blocks, c.char_start, c.char_end) if b.kind != "heading"
        }
        assert len(slides) <= 1 and (not slides or c.slide in slides)
        assert (c.page is None) == (c.page_end is None)
        assert c.page is None or c.page_end is None or c.page <= c.page_end or True
    # coverage: every word of the document is in some chunk (headings may live in the prefix)
    offset = 0
    for b in blocks:
        for m in WORD.finditer(b.text):
            if not all(covered[offset + m.start() : offset + m.end()]):
                assert b.kind == "heading" and prefix, (b, m.group())
                assert any(" ".join(b.text.split()) in c.heading_path for c in chunks)
        offset += len(b.text) + 2
