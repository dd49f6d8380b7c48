"""Document-level lexical evidence: a chunk of a multi-chunk document scores
(1 − w) × its own BM25 + w × its document's BM25; everything else scores exactly as before."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from osprag.errors import ConfigError
from osprag.search.analysis import Analyzer, AnalyzerConfig
from osprag.search.lexical import LexicalIndex

PLAIN = AnalyzerConfig(stemming="none", compounds="off")
K1, B = 1.2, 0.75


def _doc(doc: str, rev: str = "1") -> dict[str, object]:
    return {"access_level": 1, "osp_doc": doc, "osp_rev": rev}


def _bm25(tf: float, dl: float, avgdl: float, n: int, df: int) -> float:
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))


def _scores(ix: LexicalIndex, query: str) -> dict[str, float]:
    return {h.id: h.score for h in ix.search(query, k=50)}


def _filled(path: Path | None, weight: float) -> LexicalIndex:
    ix = LexicalIndex(path, analyzer=Analyzer(PLAIN), doc_weight=weight)
    ix.upsert(
        "kern",
        ["d0", "d1", "x"],
        ["crimp height", "crimp tool seal", "crimp seal"],
        [_doc("D"), _doc("D"), {"access_level": 1}],
    )
    return ix


def test_mix_matches_a_hand_computation() -> None:
    w = 0.4
    ix = _filled(None, w)
    got = _scores(ix, "crimp height")
    n, avg_chunk, avg_doc = 3, 7 / 3, 7 / 2  # documents: D (5 tokens) and x (2)
    doc_d = _bm25(2, 5, avg_doc, n, 3) + _bm25(1, 5, avg_doc, n, 1)
    d0 = _bm25(1, 2, avg_chunk, n, 3) + _bm25(1, 2, avg_chunk, n, 1)
    d1 = _bm25(1, 3, avg_chunk, n, 3)
    assert got["d0"] == pytest.approx((1 - w) * d0 + w * doc_d, rel=1e-5)
    assert got["d1"] == pytest.approx((1 - w) * d1 + w * doc_d, rel=1e-5)
    assert got["x"] == pytest.approx(_bm25(1, 2, avg_chunk, n, 3), rel=1e-5)
    # the document lifts d1 (no "height" of its own) above x; within D, d0 stays first
    assert list(got) == ["d0", "d1", "x"]
    ix.close()


def test_single_chunk_documents_score_exactly_as_without() -> None:
    texts = ["crimp height tool", "seal crimp", "tool tool seal height"]
    metas = [_doc("A"), _doc("B"), {"access_level": 1}]
    plain = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.0)
    mixed = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.7)
    for ix in (plain, mixed):
        ix.upsert("kern", ["a", "b", "c"], texts, metas)
    for query in ("crimp height", "seal", "tool height crimp"):
        assert _scores(mixed, query) == _scores(plain, query)  # bit for bit


def test_revisions_and_layers_are_separate_documents() -> None:
    ix = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=1.0)
    ix.upsert("kern", ["old", "new"], ["crimp height", "crimp"], [_doc("D", "1"), _doc("D", "2")])
    ix.upsert("erweitert", ["other"], ["crimp height"], [_doc("D", "2")])
    solo = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.0)
    solo.upsert("kern", ["old", "new"], ["crimp height", "crimp"], [{}, {}])
    solo.upsert("erweitert", ["other"], ["crimp height"], [{}])
    assert _scores(ix, "crimp height") == _scores(solo, "crimp height")


def test_deletion_and_reopen_keep_the_documents_exact(tmp_path: Path) -> None:
    ix = _filled(tmp_path / "lex.sqlite", 0.5)
    ix.upsert("kern", ["d2"], ["height height tool"], [_doc("D")])
    ix.delete("kern", ["d2"])
    reference = _filled(None, 0.5)
    assert _scores(ix, "crimp height tool") == pytest.approx(
        _scores(reference, "crimp height tool"), rel=1e-6
    )
    ix.delete("kern", ["d1"])  # D is down to one chunk: d0 scores as its own document
    ix.close()
    reopened = LexicalIndex(tmp_path / "lex.sqlite", analyzer=Analyzer(PLAIN), doc_weight=0.5)
    alone = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.0)
    alone.upsert("kern", ["d0", "x"], ["crimp height", "crimp seal"], [{}, {}])
    assert _scores(reopened, "crimp height") == _scores(alone, "crimp height")
    reopened.close()


def test_weight_is_validated_and_acts_at_query_time() -> None:
    with pytest.raises(ConfigError):
        LexicalIndex(None, doc_weight=1.5)
    ix = _filled(None, 0.0)
    before = _scores(ix, "crimp height")
    ix.doc_weight = 1.0
    after = _scores(ix, "crimp height")
    assert after["d0"] == pytest.approx(after["d1"])  # the document score alone
    assert after["x"] == before["x"]
    with pytest.raises(ConfigError):
        ix.doc_weight = -0.1


def test_sections_of_one_document_are_separate_units() -> None:
    metas = [{**_doc("D"), "section": "Prüfung"}, {**_doc("D"), "section": "Freigabe"}]
    ix = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=1.0)
    ix.upsert("kern", ["p", "f"], ["crimp height", "crimp tool"], metas)
    solo = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.0)
    solo.upsert("kern", ["p", "f"], ["crimp height", "crimp tool"], [{}, {}])
    assert _scores(ix, "crimp height tool") == _scores(solo, "crimp height tool")


def test_compaction_keeps_units_exact() -> None:
    words = ["crimp", "height", "tool", "seal", "press", "wire", "force", "pull"]
    texts = [" ".join(words[(i * 3 + j) % 8] for j in range(1 + i % 4)) for i in range(1200)]
    metas = [_doc(f"D{i // 4}") for i in range(1200)]
    ids = [f"c{i}" for i in range(1200)]
    ix = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.5)
    ix.upsert("kern", ids, texts, metas)
    gone = [i for i in range(1200) if i % 4 > 1 or i >= 400]  # most slots die: renumbered
    ix.delete("kern", [ids[i] for i in gone])
    keep = sorted(set(range(1200)) - set(gone))
    fresh = LexicalIndex(None, analyzer=Analyzer(PLAIN), doc_weight=0.5)
    fresh.upsert("kern", [ids[i] for i in keep], [texts[i] for i in keep], [metas[i] for i in keep])
    ix.upsert("kern", ["n1", "n2"], ["crimp height", "crimp wire"], [_doc("N"), _doc("N")])
    fresh.upsert("kern", ["n1", "n2"], ["crimp height", "crimp wire"], [_doc("N"), _doc("N")])
    for query in ("crimp height", "tool wire force", "seal pull"):
        assert _scores(ix, query) == pytest.approx(_scores(fresh, query), rel=1e-6)
