"""LexicalIndex on a real SQLite file: BM25 values, one IDF over all layers, filters applied
before the top k, incremental writes, persistence across connections, threads."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osprag.errors import (
    ConfigError,
    DuplicateId,
    InvalidFilter,
    InvalidInput,
    InvalidMetadata,
    StoreError,
)
from osprag.search.analysis import Analyzer, AnalyzerConfig
from osprag.search.lexical import SCHEMA_VERSION, LexicalHit, LexicalIndex

PLAIN = AnalyzerConfig(stemming="none", compounds="off")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LexicalIndex]:
    ix = LexicalIndex(tmp_path / "lexical.sqlite")
    try:
        yield ix
    finally:
        ix.close()


def _ids(hits: list[LexicalHit]) -> list[str]:
    return [h.id for h in hits]


def test_bm25_matches_a_hand_computation() -> None:
    ix = LexicalIndex(None, analyzer=Analyzer(PLAIN), k1=1.2, b=0.75)
    texts = {"a": "crimp crimp height", "b": "crimp tool", "c": "seal tool tool tool"}
    ix.upsert("kern", list(texts), list(texts.values()), [{"access_level": 1}] * 3)
    hits = ix.search("crimp", k=10)
    n, df, avgdl = 3, 2, (3 + 2 + 4) / 3

    def bm25(tf: int, dl: int) -> float:
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))

    assert _ids(hits) == ["a", "b"]
    assert hits[0].score == pytest.approx(bm25(2, 3), rel=1e-5)
    assert hits[1].score == pytest.approx(bm25(1, 2), rel=1e-5)
    assert [h.rank for h in hits] == [1, 2]
    ix.close()


def test_one_idf_across_layers(index: LexicalIndex) -> None:
    index.upsert("kern", ["k1"], ["Crimphöhe prüfen"], [{"access_level": 1}])
    index.upsert("erweitert", ["e1"], ["Crimphöhe prüfen"], [{"access_level": 1}])
    index.upsert("erweitert", ["e2", "e3"], ["Dichtung", "Stecker"], None)
    hits = index.search("Crimphöhe", k=5)
    assert {(h.layer, h.id) for h in hits} == {("kern", "k1"), ("erweitert", "e1")}
    assert hits[0].score == pytest.approx(hits[1].score)
    alone = index.search("Crimphöhe", k=5, layers=["kern"])
    assert _ids(alone) == ["k1"]
    assert alone[0].score == pytest.approx(hits[0].score)  # the other layer still counts


def test_where_is_applied_before_the_top_k(index: LexicalIndex) -> None:
    strong = [f"s{i}" for i in range(40)]
    index.upsert("kern", strong, ["Crimphöhe Crimphöhe Crimphöhe"] * 40, [{"access_level": 4}] * 40)
    weak = ["w1", "w2", "w3"]
    index.upsert(
        "kern", weak, ["Crimphöhe und viel anderer Text dazu"] * 3, [{"access_level": 1}] * 3
    )
    hits = index.search("Crimphöhe", k=3, where={"access_level": {"$lte": 2}})
    assert sorted(_ids(hits)) == weak
    assert len(index.search("Crimphöhe", k=100, where={"access_level": {"$lte": 2}})) == 3


def test_where_uses_chroma_semantics(index: LexicalIndex) -> None:
    index.upsert(
        "kern",
        ["a", "b", "c"],
        ["Prüfplan"] * 3,
        [{"access_level": 1, "doc_type": "SOP"}, {"access_level": 1}, {"access_level": True}],
    )
    assert _ids(index.search("Prüfplan", where={"doc_type": {"$ne": "SOP"}})) == ["b", "c"]
    assert _ids(index.search("Prüfplan", where={"access_level": 1})) == ["a", "b"]
    with pytest.raises(InvalidFilter):
        index.search("Prüfplan", where={"access_level": {"$lt": "2"}})


DOMAIN = [
    ("0,35 mm²", "Crimphöhe für 0,35 mm² Leitungen"),
    ("±0,03 mm", "Toleranz der Crimphöhe ±0,03 mm"),
    ("P6", "Prozessaudit Element P6"),
    ("8D", "8D-Report zur Reklamation"),
    ("i.O.", "Alle Teile i.O. befundet"),
    ("n.i.O.", "Drei Teile n.i.O. aussortiert"),
    ("VDA 6.3", "Audit nach VDA 6.3 geplant"),
    ("KS-4711-23", "Zeichnung KS-4711-23 Index C"),
    ("D3", "D3 Sofortmaßnahmen eingeleitet"),
    ("%GRR", "Messsystemanalyse %GRR 8 %"),
    ("cpk ≥ 1,33", "Fähigkeit cpk ≥ 1,33 gefordert"),
]


@pytest.mark.parametrize(("token", "text"), DOMAIN)
def test_domain_tokens_are_found(token: str, text: str) -> None:
    ix = LexicalIndex(None)
    distractors = [
        "Querschnitt 0,5 mm² Leitung",
        "Toleranz 0,3 mm Crimphöhe",
        "Audit nach VDA 6.5 und P5",
        "Zeichnung KS-4712-23 Index C",
        "Teile aussortiert",
        "Prozessfähigkeit cpk 1,67 gefordert",
    ]
    ids = ["target"] + [f"d{i}" for i in range(len(distractors))]
    ix.upsert("kern", ids, [text, *distractors], None)
    hits = ix.search(token, k=3)
    assert hits and hits[0].id == "target", (token, hits)
    ix.close()


def test_decimal_does_not_match_another_decimal() -> None:
    ix = LexicalIndex(None)
    ix.upsert("kern", ["a", "b"], ["Leitung 0,5 mm²", "Leitung 0,35 mm²"], None)
    assert _ids(ix.search("0,35", k=5)) == ["b"]
    assert _ids(ix.search("0,5", k=5)) == ["a"]
    ix.close()


def test_compounds_are_found_both_ways(index: LexicalIndex) -> None:
    index.upsert("kern", ["c", "p"], ["Crimphöhenmessung stündlich", "Crimphöhe und Messung"])
    assert set(_ids(index.search("Crimphöhe", k=5))) == {"c", "p"}
    assert set(_ids(index.search("Messung", k=5))) == {"c", "p"}
    assert set(_ids(index.search("Crimphöhenmessung", k=5))) == {"c", "p"}
    assert index.search("Crimphöhenmessung", k=5)[0].id == "c"


def test_language_metadata_picks_the_stemmer(index: LexicalIndex) -> None:
    index.upsert(
        "kern",
        ["en", "de"],
        ["All measurements of the crimp height", "Alle Messungen der Crimphöhe"],
        [{"language": "en"}, {"language": "de"}],
    )
    assert _ids(index.search("measurement", k=5)) == ["en"]
    assert _ids(index.search("Messung", k=5)) == ["de"]


def test_upsert_replaces_and_delete_removes(index: LexicalIndex) -> None:
    index.upsert("kern", ["a", "b"], ["Dichtung prüfen", "Stecker prüfen"])
    index.upsert("kern", ["a"], ["Gehäuse prüfen"])
    assert index.search("Dichtung") == []
    assert _ids(index.search("Gehäuse")) == ["a"]
    assert index.count() == 2
    assert index.delete("kern", ["a", "missing"]) == 1
    assert index.delete("erweitert", ["b"]) == 0
    assert _ids(index.search("prüfen")) == ["b"]
    assert index.count() == 1


def test_a_writer_holds_no_postings_until_it_reads(tmp_path: Path) -> None:
    """Imports and rebuilds only write: they must stream rows, not build the in-memory index."""
    path = tmp_path / "lexical.sqlite"
    with LexicalIndex(path) as writer:
        writer.upsert("kern", ["a", "b", "c"], ["Dichtung prüfen", "Stecker prüfen", "Gehäuse"])
        writer.upsert("kern", ["a"], ["Gehäuse prüfen"])
        assert writer.delete("kern", ["b", "b", "missing"]) == 1
        writer.clear("erweitert")
        assert not writer.loaded
        assert writer.count() == 2 and writer.loaded
        assert sorted(_ids(writer.search("Gehäuse", k=5))) == ["a", "c"]
        assert writer.search("Dichtung") == [] and writer.search("Stecker") == []
        writer.clear("kern")
        assert not writer.loaded and writer.count() == 0


def test_count_and_clear(index: LexicalIndex) -> None:
    index.upsert("kern", ["a", "b"], ["eins", "zwei"])
    index.upsert("erweitert", ["a"], ["drei"])
    assert (index.count(), index.count("kern"), index.count("erweitert")) == (3, 2, 1)
    index.clear("kern")
    assert (index.count(), index.count("kern")) == (1, 0)
    assert _ids(index.search("drei")) == ["a"]
    index.clear()
    assert index.count() == 0
    assert index.search("drei") == []


def test_many_writes_and_deletes_keep_search_exact(index: LexicalIndex) -> None:
    """Small batches make many segments and merges; deletes make compaction happen."""
    for batch in range(30):
        ids = [f"{batch}-{i}" for i in range(50)]
        index.upsert("kern", ids, [f"Prüfung Los{batch} Teil{i}" for i in range(50)])
        index.search("Prüfung", k=1)
    assert index.count() == 1500
    for batch in range(0, 30, 2):
        index.delete("kern", [f"{batch}-{i}" for i in range(50)])
    index.delete("kern", [f"1-{i}" for i in range(50)])
    assert index.count() == 700
    assert _ids(index.search("Los3 Teil7", k=1)) == ["3-7"]
    assert not any(h.id.startswith("4-") for h in index.search("Los4", k=1000))
    assert len(index.search("Prüfung", k=1000)) == 700
    docs = {
        ("kern", f"{b}-{i}"): f"Prüfung Los{b} Teil{i}" for b in range(3, 30, 2) for i in range(50)
    }
    expected = _reference(index.analyzer, docs, "Los7 Teil3", index.k1, index.b)
    hits = index.search("Los7 Teil3", k=1000)
    assert {(h.layer, h.id): h.score for h in hits} == pytest.approx(expected, rel=1e-4)


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "lexical.sqlite"
    with LexicalIndex(path) as ix:
        ix.upsert("kern", ["a", "b"], ["Crimphöhe prüfen", "Dichtung"], [{"access_level": 2}] * 2)
        before = ix.search("Crimphöhe prüfen", k=5)
    with LexicalIndex(path) as again:
        assert again.count() == 2
        assert again.search("Crimphöhe prüfen", k=5) == before
        assert _ids(again.search("Dichtung", where={"access_level": 2})) == ["b"]


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "lexical.sqlite"
    LexicalIndex(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        LexicalIndex(path)


def test_another_analyzer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lexical.sqlite"
    with LexicalIndex(path) as ix:
        ix.upsert("kern", ["a"], ["Text"])
    with pytest.raises(ConfigError, match="analyzer"):
        LexicalIndex(path, analyzer=Analyzer(PLAIN))
    with LexicalIndex(path) as ix:
        ix.clear()
    LexicalIndex(path, analyzer=Analyzer(PLAIN)).close()  # an empty index takes any analyzer


def test_two_connections_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "lexical.sqlite"
    with LexicalIndex(path) as writer, LexicalIndex(path) as reader:
        writer.upsert("kern", ["a"], ["Crimphöhe"])
        assert _ids(reader.search("Crimphöhe")) == ["a"]
        assert reader.loaded and not writer.loaded  # the writer's ids come from the file
        reader.upsert("kern", ["b"], ["Crimphöhe Messung"])  # its term ids must not collide
        writer.upsert("kern", ["c"], ["Messung Dichtung"])
        for ix in (writer, reader):
            assert ix.count() == 3
            assert set(_ids(ix.search("Messung Dichtung Crimphöhe", k=5))) == {"a", "b", "c"}
            assert _ids(ix.search("Dichtung")) == ["c"]


def test_threads_write_and_read_at_once(index: LexicalIndex) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for batch in range(10):
                ids = [f"{worker}-{batch}-{i}" for i in range(20)]
                index.upsert("kern", ids, [f"Prüfung Werk{worker} Los{batch}"] * 20)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(50):
                index.search("Prüfung Werk1", k=5)
                index.count()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert index.count() == 600
    assert len(index.search("Prüfung", k=1000)) == 600
    assert {h.id[:4] for h in index.search("Werk2 Los9", k=20)} == {"2-9-"}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda ix: ix.upsert("kern", ["a", "b"], ["eins"]), InvalidInput),
        (lambda ix: ix.upsert("kern", ["a", "a"], ["eins", "zwei"]), DuplicateId),
        (lambda ix: ix.upsert("", ["a"], ["eins"]), InvalidInput),
        (lambda ix: ix.upsert("kern", [""], ["eins"]), InvalidInput),
        (lambda ix: ix.upsert("kern", ["a"], ["eins"], [{"tags": ["x"]}]), InvalidMetadata),
        (lambda ix: ix.upsert("kern", ["a"], ["eins"], [{"v": float("nan")}]), InvalidMetadata),
        (lambda ix: ix.search("eins", k=0), InvalidInput),
        (lambda ix: ix.search("eins", where={}), InvalidFilter),
    ],
)
def test_bad_input_is_refused(call: object, error: type[Exception]) -> None:
    ix = LexicalIndex(None)
    with pytest.raises(error):
        call(ix)  # type: ignore[operator]
    assert ix.count() == 0
    ix.close()


def test_closed_index_refuses(tmp_path: Path) -> None:
    ix = LexicalIndex(tmp_path / "x.sqlite")
    ix.close()
    ix.close()  # idempotent
    with pytest.raises(StoreError):
        ix.search("eins")


def test_queries_without_terms_find_nothing(index: LexicalIndex) -> None:
    index.upsert("kern", ["a"], ["Die Prüfung"])
    assert index.search("die und der") == []
    assert index.search("Prüfung", layers=["erweitert"]) == []
    assert index.search("Prüfung", layers=[]) == []


WORDS = ["Crimphöhe", "Messung", "Dichtung", "Stecker", "P6", "0,35", "mm²", "Prüfplan", "Los"]


def _reference(
    analyzer: Analyzer, docs: dict[tuple[str, str], str], query: str, k1: float, b: float
) -> dict[tuple[str, str], float]:
    """BM25 over the current documents, computed from scratch."""
    analysed = {key: analyzer.analyse_document(text, "de") for key, text in docs.items()}
    n = len(analysed)
    avgdl = sum(length for _, length in analysed.values()) / n
    weights = analyzer.query(query).by_language["de"]
    scores: dict[tuple[str, str], float] = {}
    for term, weight in weights.items():
        df = sum(term in terms for terms, _ in analysed.values())
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for key, (terms, length) in analysed.items():
            tf = terms.count(term)
            if tf:
                norm = k1 * (1 - b + b * length / avgdl)
                scores[key] = scores.get(key, 0.0) + weight * idf * tf * (k1 + 1) / (tf + norm)
    return scores


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["upsert", "upsert", "delete", "search"]),
            st.sampled_from(["kern", "erweitert"]),
            st.lists(st.integers(0, 30), min_size=1, max_size=12, unique=True),
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_scores_equal_a_from_scratch_bm25(
    ops: list[tuple[str, str, list[int], list[str]]],
) -> None:
    analyzer = Analyzer()
    ix = LexicalIndex(None, analyzer=analyzer)
    docs: dict[tuple[str, str], str] = {}
    for op, layer, numbers, words in ops:
        ids = [f"d{i}" for i in numbers]
        if op == "upsert":
            texts = [" ".join(words[: 1 + (i % len(words))]) + f" Los{i}" for i in numbers]
            ix.upsert(layer, ids, texts, [{"language": "de"}] * len(ids))
            docs.update({(layer, i): t for i, t in zip(ids, texts, strict=True)})
        elif op == "delete":
            ix.delete(layer, ids)
            for i in ids:
                docs.pop((layer, i), None)
        else:
            ix.search(" ".join(words), k=3)
    assert ix.count() == len(docs)
    for query in ("Crimphöhe Messung", "P6 0,35 mm²", "Prüfplan Los3", "Dichtungsmessung"):
        hits = ix.search(query, k=100)
        expected = _reference(analyzer, docs, query, ix.k1, ix.b) if docs else {}
        assert {(h.layer, h.id): h.score for h in hits} == pytest.approx(expected, rel=1e-4)
    ix.close()
