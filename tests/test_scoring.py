"""Calibrated relevance, ``min_score`` and ``explain`` through KnowledgeBase.query, in both
storage modes; the CLI's --explain."""

from __future__ import annotations

import json

import pytest

from osprag import KnowledgeBase

DOCS = [
    "Die Crimphöhe für Leitungen mit 0,35 mm² beträgt 0,80 ± 0,03 mm und wird je Los geprüft.",
    "Die Auszugskraft bei 0,5 mm² muss mindestens 70 N betragen.",
    "Reklamationen werden im 8D-Prozess bearbeitet; D3 Sofortmaßnahmen binnen 24 Stunden.",
    "Der Lieferant liefert einen 8D-Bericht innerhalb der Fristen.",
]


@pytest.fixture
def filled(kb: KnowledgeBase) -> KnowledgeBase:
    kb.add("kern", DOCS[:2], ids=["k1", "k2"], metadatas={"access_level": 1})
    kb.add("erweitert", DOCS[2:], ids=["e1", "e2"], metadatas={"access_level": 1})
    return kb


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_explain_shows_each_leg(filled: KnowledgeBase, mode: str) -> None:
    res = filled.query("Crimphöhe 0,35 mm²", mode=mode, n_results=4, explain=True)
    top = res.hits[0]
    assert top.id == "k1" and top.explain is not None
    legs = {"dense": ["dense"], "lexical": ["lexical"], "hybrid": ["dense", "lexical"]}[mode]
    for leg in legs:
        assert top.explain[leg]["rank"] == 1 and isinstance(top.explain[leg]["score"], float)
    if mode == "dense":
        assert top.explain["lexical"] is None
        assert top.explain["dense"]["score"] == pytest.approx(1 - (top.distance or 0))
    assert top.explain["fused"] == pytest.approx(top.score)
    assert top.explain["relevance"] == top.relevance
    assert top.explain["calibration"].endswith(f"|{mode}")
    assert all(0.0 <= (h.relevance or 0) <= 1.0 for h in res.hits)
    plain = filled.query("Crimphöhe 0,35 mm²", mode=mode, n_results=4)
    assert plain.hits[0].explain is None and "explain" not in plain.hits[0].to_dict()
    assert [h.relevance for h in plain.hits] == [h.relevance for h in res.hits]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_min_score_means_calibrated_relevance(filled: KnowledgeBase, mode: str) -> None:
    hits = filled.query("8D Bericht Fristen", mode=mode, n_results=4).hits
    cut = sorted(h.relevance or 0 for h in hits)[len(hits) // 2]
    kept = filled.query("8D Bericht Fristen", mode=mode, n_results=4, min_score=cut).hits
    assert {h.id for h in kept} == {h.id for h in hits if (h.relevance or 0) >= cut}
    assert filled.query("8D Bericht Fristen", mode=mode, min_score=1.01).hits == []


def test_unanswerable_question_scores_below_an_answerable_one(filled: KnowledgeBase) -> None:
    answered = filled.query("Wie hoch ist die Crimphöhe bei 0,35 mm²?").hits[0].relevance
    unrelated = filled.query("Welche Lackschichtdicke gilt für Stoßfänger?").hits
    assert answered is not None and answered > 0.5
    assert not unrelated or (unrelated[0].relevance or 0) < answered


def test_cli_query_explain(
    filled: KnowledgeBase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from osprag.cli import main

    settings = filled.settings
    filled.close()
    monkeypatch.setenv("OSP_EMBEDDING_BACKEND", "torch")
    monkeypatch.setenv("OSP_CACHE_DIR", str(settings.cache_dir))
    if settings.effective_storage == "embedded":
        monkeypatch.setenv("OSP_DATA_DIR", str(settings.data_dir))
    else:
        monkeypatch.setenv("OSP_CHROMA_URL", str(settings.chroma_url))
        monkeypatch.setenv("OSP_CHROMA_DATABASE", settings.chroma_database)
    assert main(["query", "Crimphöhe", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "dense cosine" in out and "BM25" in out and "calibrated" in out
    assert main(["query", "Crimphöhe", "--explain", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert hit["explain"]["lexical"]["rank"] == 1 and 0 <= hit["relevance"] <= 1
