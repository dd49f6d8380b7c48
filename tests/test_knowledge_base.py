"""KnowledgeBase against real Chroma (embedded and a real server) and the real model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from osprag import (
    DimensionMismatch,
    DuplicateId,
    InvalidFilter,
    InvalidInput,
    InvalidMetadata,
    KnowledgeBase,
    LayerNotFound,
    NotFound,
    Principal,
)

KERN = [
    "Die Crimphöhe für Leitungen mit 0,35 mm² beträgt 0,80 ± 0,03 mm und wird je Los geprüft.",
    "Die Auszugskraft bei 0,5 mm² muss mindestens 70 N betragen (nach jedem Werkzeugwechsel).",
    "Reklamationen werden im 8D-Prozess bearbeitet; D3 Sofortmaßnahmen binnen 24 Stunden.",
]
ERW = [
    "VDA 6.3 Prozessaudit: Prozesselement P6 bewertet die Serienfertigung.",
    "IATF 16949 clause 8.5.1.1 requires a control plan for each manufacturing site.",
]


def snapshot(kb: KnowledgeBase) -> dict[str, Any]:
    """Everything stored, to prove that a rejected call changed nothing."""
    out = {}
    for layer in kb.settings.layers:
        recs = kb.get(layer, include=["documents", "metadatas"])
        out[layer] = sorted((r.id, r.text, tuple(sorted(r.metadata.items()))) for r in recs)
    return out


@pytest.fixture
def filled(kb: KnowledgeBase) -> KnowledgeBase:
    kb.add(
        "kern",
        KERN,
        ids=["k1", "k2", "k3"],
        metadatas=[
            {"access_level": 1, "version": "2.1", "status": "aktiv"},
            {"access_level": "L3", "doc_type": "work_instruction"},
            {"access_level": 4, "language": "de"},
        ],
    )
    kb.add("erweitert", ERW, ids=["e1", "e2"], metadatas=[{"access_level": 2}, {"language": "en"}])
    return kb


def test_query_merges_layers_with_labels(filled: KnowledgeBase) -> None:
    res = filled.query("Wie hoch ist die Crimphöhe bei 0,35 mm²?", n_results=5, mode="dense")
    assert res.hits[0].id == "k1"
    assert res.hits[0].layer == "kern"
    assert {h.layer for h in res.hits} == {"kern", "erweitert"}
    assert [h.rank for h in res.hits] == list(range(1, len(res.hits) + 1))
    scores = [h.score for h in res.hits]
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert abs(res.hits[0].score - (1 - res.hits[0].distance)) < 1e-9
    assert set(res.timings_ms) == {"embed", "search", "merge", "total"}


def test_n_results_larger_than_store_returns_what_exists(filled: KnowledgeBase) -> None:
    res = filled.query("Audit", n_results=50)
    assert len(res.hits) == 5


def test_batch_query_and_layer_choice(filled: KnowledgeBase) -> None:
    results = filled.query(["Auszugskraft", "control plan"], layers=["erweitert"], n_results=1)
    assert len(results) == 2
    assert all(r.hits[0].layer == "erweitert" for r in results)
    assert results[1].hits[0].id == "e2"


def test_where_filter_and_min_score(filled: KnowledgeBase) -> None:
    res = filled.query("Crimphöhe", where={"access_level": {"$lte": 1}})
    assert [h.id for h in res.hits] == ["k1"]
    res = filled.query("Crimphöhe", where={"status": "AKTIV", "version": "2.1"})
    assert [h.id for h in res.hits] == ["k1"]
    res = filled.query("Crimphöhe", where_document={"$contains": "Auszugskraft"})
    assert [h.id for h in res.hits] == ["k2"]
    for mode in ("dense", "lexical", "hybrid"):
        hits = filled.query("Crimphöhe 0,35 mm²", mode=mode).hits
        best = hits[0].relevance  # min_score filters on the calibrated relevance
        assert best is not None and best > max(h.relevance or 0 for h in hits[1:]), mode
        res = filled.query("Crimphöhe 0,35 mm²", min_score=best - 1e-6, mode=mode)
        assert [h.id for h in res.hits] == ["k1"], mode


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_clearance_is_enforced_on_every_read(filled: KnowledgeBase, mode: str) -> None:
    reader = Principal("alice", clearance=2)
    res = filled.query(
        "Reklamation 8D Auszugskraft Crimphöhe VDA Prozessaudit",
        n_results=10,
        principal=reader,
        mode=mode,
    )
    assert {h.id for h in res.hits} <= {"k1", "e1"} and res.hits
    assert all(h.metadata["access_level"] <= 2 for h in res.hits)
    # a client filter cannot widen the clearance
    res = filled.query("8D", where={"access_level": {"$gte": 3}}, principal=reader, mode=mode)
    assert res.hits == []
    res = filled.query(
        "8D Reklamationen",
        where={"$or": [{"access_level": 4}, {"language": "de"}]},
        principal=reader,
        mode=mode,
    )
    assert res.hits == []
    assert {r.id for r in filled.get("kern", principal=reader)} == {"k1"}
    assert filled.get("kern", ids=["k3"], principal=reader) == []
    assert filled.count("kern", principal=reader) == 1
    assert filled.count("kern") == 3


def test_shared_paragraph_kept_per_access_level(kb: KnowledgeBase) -> None:
    text = "Geltungsbereich: Dieses Dokument gilt für alle Standorte der Osprag Kabeltechnik GmbH."
    kb.add("kern", [text], metadatas=[{"access_level": 1, "source": "a.md"}])
    kb.add("kern", [text], metadatas=[{"access_level": 4, "source": "b.md"}])
    assert kb.count("kern") == 2
    public = kb.query("Geltungsbereich", principal=Principal("p", 1))
    assert [h.metadata["source"] for h in public.hits] == ["a.md"]
    full = kb.query("Geltungsbereich")
    assert sorted(h.metadata["access_level"] for h in full.hits) == [1, 4]


def test_default_access_level_is_most_restrictive(kb: KnowledgeBase) -> None:
    kb.add("kern", ["Ohne Zugriffsangabe"], ids=["x"])
    assert kb.get("kern", ids=["x"])[0].metadata["access_level"] == 4
    assert kb.query("Zugriffsangabe", principal=Principal("p", 3)).hits == []


def test_metadata_normalised(filled: KnowledgeBase) -> None:
    meta = filled.get("kern", ids=["k1"])[0].metadata
    assert meta == {"access_level": 1, "version": "2.1", "status": "AKTIV"}
    assert filled.get("kern", ids=["k2"])[0].metadata["access_level"] == 3


def test_default_ids_are_deterministic(kb: KnowledgeBase) -> None:
    first = kb.add("kern", ["Text A", "Text B"])
    assert first.ids == [i for i in first.ids if i.startswith("r-")]
    again = kb.upsert("kern", ["Text A", "Text B"])
    assert again.ids == first.ids
    assert kb.count("kern") == 2


def test_upsert_replaces_update_merges_delete(filled: KnowledgeBase) -> None:
    filled.upsert("kern", ["Neue Crimphöhe 0,82 mm"], ids=["k1"], metadatas=[{"access_level": 2}])
    rec = filled.get("kern", ids=["k1"])[0]
    assert rec.text == "Neue Crimphöhe 0,82 mm"
    assert rec.metadata == {"access_level": 2}
    filled.update("kern", ["k1"], metadatas=[{"status": "obsolet"}])
    assert filled.get("kern", ids=["k1"])[0].metadata == {"access_level": 2, "status": "OBSOLET"}
    filled.update("kern", ["k2"], texts=["Auszugskraft 0,5 mm² mindestens 75 N"])
    assert filled.query("Auszugskraft 75 N", layers="kern", n_results=1).hits[0].id == "k2"
    with pytest.raises(NotFound):
        filled.update("kern", ["nope"], metadatas=[{"status": "x"}])
    assert filled.delete("kern", where={"access_level": 4}) == 1
    assert filled.delete("kern", where_document={"$contains": "Auszugskraft"}) == 1
    assert filled.delete("kern", ids=["k1", "missing"]) == 1
    assert filled.count("kern") == 0
    with pytest.raises(InvalidInput):
        filled.delete("kern")


def test_writes_split_by_max_batch_size(kb: KnowledgeBase) -> None:
    n = kb.store.max_batch_size + 7
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"b{i}" for i in range(n)]
    kb.add(
        "erweitert",
        [f"chunk {i}" for i in range(n)],
        ids=ids,
        embeddings=vecs,
        metadatas={"access_level": 1},
    )
    assert kb.count("erweitert") == n
    res = kb.query("chunk", layers="erweitert", n_results=3)
    assert len(res.hits) == 3


# ------------------------------------------------------------------ bad input: nothing changes


BAD_CALLS = {
    "duplicate ids in call": (lambda kb: kb.add("kern", ["a", "b"], ids=["d", "d"]), DuplicateId),
    "existing id on add": (lambda kb: kb.add("kern", ["x", "y"], ids=["new", "k1"]), DuplicateId),
    "nested metadata": (
        lambda kb: kb.add("kern", ["a"], metadatas=[{"tags": ["QM", "REK"]}]),
        InvalidMetadata,
    ),
    "None metadata value": (
        lambda kb: kb.add("kern", ["a"], metadatas=[{"author": None}]),
        InvalidMetadata,
    ),
    "bad access level": (
        lambda kb: kb.add("kern", ["a"], metadatas=[{"access_level": "L7"}]),
        InvalidMetadata,
    ),
    "bad date": (
        lambda kb: kb.add("kern", ["a"], metadatas=[{"valid_from": "soon"}]),
        InvalidMetadata,
    ),
    "wrong dimension": (
        lambda kb: kb.add("kern", ["a"], embeddings=[[0.1] * 383]),
        DimensionMismatch,
    ),
    "ragged vectors": (
        lambda kb: kb.add("kern", ["a", "b"], embeddings=[[0.1] * 384, [0.1]]),
        DimensionMismatch,
    ),
    "unknown layer": (lambda kb: kb.add("archiv", ["a"]), LayerNotFound),
    "unknown layer query": (lambda kb: kb.query("a", layers=["archiv"]), LayerNotFound),
    "unknown operator": (lambda kb: kb.query("a", where={"v": {"$like": "x"}}), InvalidFilter),
    "gte with string": (lambda kb: kb.query("a", where={"version": {"$gte": "2"}}), InvalidFilter),
    "empty and": (lambda kb: kb.query("a", where={"$and": []}), InvalidFilter),
    "bad where_document": (lambda kb: kb.query("a", where_document={"$has": "x"}), InvalidFilter),
    "delete with bad filter": (lambda kb: kb.delete("kern", where={"$or": "x"}), InvalidFilter),
    "n_results zero": (lambda kb: kb.query("a", n_results=0), InvalidInput),
    "n_results negative": (lambda kb: kb.query("a", n_results=-3), InvalidInput),
    "empty text": (lambda kb: kb.add("kern", ["  "]), InvalidInput),
    "metadata count": (lambda kb: kb.add("kern", ["a", "b"], metadatas=[{}]), InvalidInput),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_is_rejected_and_nothing_changes(filled: KnowledgeBase, case: str) -> None:
    call, error = BAD_CALLS[case]
    before = snapshot(filled)
    with pytest.raises(error) as info:
        call(filled)
    assert str(info.value)  # one clear line
    assert "\n" not in str(info.value)
    assert snapshot(filled) == before


def test_empty_layer_query_and_get(kb: KnowledgeBase) -> None:
    assert kb.query("nichts").hits == []
    assert kb.get("kern") == []
    assert kb.count("erweitert") == 0


def test_stats_report_identity_and_index(filled: KnowledgeBase) -> None:
    stats = {s.layer: s for s in filled.stats()}
    assert stats["kern"].count == 3
    assert stats["kern"].model is not None
    assert stats["kern"].model["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert stats["kern"].model["dimension"] == 384
    assert stats["kern"].index == {
        "space": "cosine",
        "m": 16,
        "ef_construction": 200,
        "ef_search": 100,
    }
    assert stats["kern"].warnings == []
    if filled.store.mode == "embedded":
        assert (stats["kern"].disk_bytes or 0) >= 0


def test_lexical_leg_finds_exact_domain_tokens(filled: KnowledgeBase) -> None:
    res = filled.query("0,35 mm²", mode="lexical", n_results=3)
    assert res.hits[0].id == "k1" and res.hits[0].distance is None
    assert res.hits[0].score == 1.0
    res = filled.query("D3 Sofortmaßnahmen", mode="hybrid", n_results=1)
    assert res.hits[0].id == "k3"
    res = filled.query("clause 8.5.1.1", mode="hybrid", n_results=1)
    assert res.hits[0].id == "e2"


def test_lexical_index_follows_every_write(filled: KnowledgeBase) -> None:
    filled.upsert(
        "kern",
        ["Ultraschallschweißen Knotenfestigkeit"],
        ids=["k1"],
        metadatas=[{"access_level": 1}],
    )
    assert all(h.id != "k1" for h in filled.query("Crimphöhe", mode="lexical").hits)
    assert filled.query("Ultraschallschweißen", mode="lexical").hits[0].id == "k1"
    filled.update("kern", ["k2"], texts=["Kalibrierung der Messschieber jährlich"])
    assert filled.query("Messschieber", mode="lexical").hits[0].id == "k2"
    filled.delete("kern", ids=["k1"])
    assert filled.query("Ultraschallschweißen", mode="lexical").hits == []
    assert filled.lexical.count("kern") == filled.count("kern")
    filled.drop_layer("erweitert", yes=True)
    assert filled.lexical.count("erweitert") == 0


def test_lexical_index_rebuilt_when_out_of_sync(filled: KnowledgeBase) -> None:
    filled.lexical.clear("kern")  # as after a crash between the Chroma and the index write
    fresh = KnowledgeBase(filled.settings, filled.store, embedder=filled.embedder)
    fresh._lexical = filled.lexical
    assert fresh.query("Crimphöhe 0,35", mode="lexical").hits[0].id == "k1"
    assert filled.lexical.count("kern") == 3
    assert filled.rebuild_lexical(["kern"]) == {"kern": 3}


def test_invalid_mode_and_alpha(filled: KnowledgeBase) -> None:
    before = snapshot(filled)
    with pytest.raises(InvalidInput):
        filled.query("x", mode="semantic")
    with pytest.raises(InvalidInput):
        filled.query("x", alpha=1.5)
    assert snapshot(filled) == before
