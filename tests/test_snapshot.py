"""Exact in-memory search and filtered over-fetch give Chroma's answers, and never stale ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osprag import KnowledgeBase, Principal, Settings
from osprag.embedding import Embedder
from osprag.search import snapshot
from osprag.search.mirror import LayerMirror

TOPICS = [
    "Crimphöhe {i}: 0,{i} mm Toleranz je Los geprüft",
    "Auszugskraft Prüfung {i} N nach Werkzeugwechsel",
    "8D-Report Nummer {i}: Sofortmaßnahme und Ursache",
    "VDA 6.3 Prozessaudit Element P{i} Serienfertigung",
    "control plan revision {i} for the manufacturing site",
]


def _fill(kb: KnowledgeBase, n: int = 60) -> None:
    for layer, start in (("kern", 0), ("erweitert", n // 2)):
        texts = [TOPICS[i % len(TOPICS)].format(i=i) for i in range(start, start + n // 2)]
        kb.add(
            layer,
            texts,
            ids=[f"{layer[0]}{i}" for i in range(start, start + n // 2)],
            metadatas=[
                {"access_level": 1 + i % 4, "rare": "ja" if i % 29 == 0 else "nein"}
                for i in range(start, start + n // 2)
            ],
        )


def _configure(kb: KnowledgeBase, **update: Any) -> None:
    kb.settings = kb.settings.model_copy(update=update)
    for layer in kb.settings.layers:
        snapshot.invalidate(kb, layer)


def _answers(kb: KnowledgeBase, **kw: Any) -> list[list[tuple[str, float]]]:
    queries = ["Crimphöhe Toleranz", "control plan", "Prozessaudit P6", "Auszugskraft"]
    out = []
    for res in kb.query(queries, **kw):
        out.append([(h.id, round(h.score, 5)) for h in res.hits])
    return out


CASES: list[dict[str, Any]] = [
    {"mode": "dense", "n_results": 10},
    {"mode": "dense", "n_results": 5, "principal": Principal("p", clearance=1)},
    {"mode": "dense", "n_results": 3, "where": {"rare": "ja"}},
    {"mode": "dense", "where_document": {"$contains": "Prüfung"}, "n_results": 4},
    {"mode": "hybrid", "n_results": 5, "principal": Principal("p", clearance=2)},
    {"mode": "hybrid", "where_document": {"$not_contains": "Los"}, "n_results": 5},
    {"mode": "lexical", "where": {"access_level": {"$in": [1, 3]}}},
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_exact_and_overfetch_equal_chroma_filtered(kb: KnowledgeBase, case: int) -> None:
    _fill(kb)
    kw = CASES[case]
    _configure(kb, exact_search_below=0, filter_overfetch=0)
    chroma = _answers(kb, **kw)
    _configure(kb, exact_search_below=0, filter_overfetch=4)
    assert _answers(kb, **kw) == chroma  # over-fetch (with its filtered fallback for "rare")
    _configure(kb, exact_search_below=10_000)
    in_memory = all(
        snapshot.snapshot_for(kb, name, col) is not None
        for name in kb.settings.layers
        if (col := kb.collection_for(name)) is not None
    )
    assert in_memory  # server mode too: the write log's generations keep the copy fresh
    assert _answers(kb, **kw) == chroma


def test_regex_filter_goes_to_chroma(kb: KnowledgeBase) -> None:
    _fill(kb, 10)
    assert not snapshot.supports_document_filter({"$regex": "P[0-9]"})
    hits = kb.query("Prozessaudit", mode="dense", where_document={"$regex": "P[0-9]"}).hits
    assert hits and all("Prozessaudit" in (h.text or "") for h in hits)


def test_own_writes_are_seen_at_once(kb: KnowledgeBase) -> None:
    _fill(kb, 10)
    assert kb.query("Schweißnaht Zugprüfung", mode="dense", n_results=1).hits[0].id != "new"
    kb.add("kern", ["Schweißnaht Zugprüfung Ultraschall"], ids=["new"], metadatas=[{}])
    assert kb.query("Schweißnaht Zugprüfung", mode="dense", n_results=1).hits[0].id == "new"
    kb.update("kern", ["new"], metadatas=[{"access_level": 4, "status": "NEU"}])
    assert kb.query("Schweißnaht", mode="dense", n_results=1).hits[0].metadata["status"] == "NEU"
    kb.delete("kern", ids=["new"])
    assert all(h.id != "new" for h in kb.query("Schweißnaht Zugprüfung", mode="dense").hits)


def test_another_knowledge_base_writing_is_seen(
    settings: Settings, kb: KnowledgeBase, embedder: Embedder
) -> None:
    _fill(kb, 10)
    with KnowledgeBase.open(settings, embedder=embedder, read_only=True) as reader:
        assert reader.query("Lötstelle Röntgen", mode="dense", n_results=1).hits[0].id != "x"
        kb.add("erweitert", ["Lötstelle Röntgenprüfung Voids"], ids=["x"], metadatas=[{}])
        assert reader.query("Lötstelle Röntgen", mode="dense", n_results=1).hits[0].id == "x"
        kb.delete("erweitert", ids=["x"])
        assert all(h.id != "x" for h in reader.query("Lötstelle Röntgen", mode="dense").hits)


def test_another_process_writing_is_seen(tmp_path: Path, embedder: Embedder) -> None:
    """A reader holding a snapshot sees a CLI process's write on its next query.

    The new chunk is found (lexical leg); the dense leg then answers through Chroma, which in
    an embedded reader does not yet hold the other process's vector: never a stale copy, never
    an error.
    """
    settings = Settings(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", embedding_backend="torch"
    )
    with KnowledgeBase.open(settings, embedder=embedder) as writer:
        _fill(writer, 10)
    with KnowledgeBase.open(settings, embedder=embedder, read_only=True) as reader:
        col = reader.collection_for("kern")
        assert col is not None
        assert reader.query("Lötstelle Röntgen", n_results=1).hits[0].id != "x"
        before = snapshot.layer_fingerprint(reader, "kern")
        assert snapshot.snapshot_for(reader, "kern", col) is not None
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OSP_EMBEDDING_BACKEND="torch")
        osp = str(Path(sys.executable).parent / "osp")
        args = ["--data-dir", str(settings.data_dir), "-q", "add", "Lötstelle Röntgenprüfung"]
        args += ["--layer", "kern", "--id", "x", "--meta", "access_level=1"]
        done = subprocess.run([osp, *args], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert snapshot.layer_fingerprint(reader, "kern") != before
        assert reader.query("Lötstelle Röntgen", n_results=1).hits[0].id == "x"
        chroma = col.query(reader.embedder.embed_queries(["Lötstelle"]), 3, None, None, [])
        dense = reader.query("Lötstelle", mode="dense", layers="kern", n_results=3).hits
        assert [h.id for h in dense] == chroma["ids"][0]


def test_fingerprint_follows_the_layer_generation(kb: KnowledgeBase) -> None:
    _fill(kb, 10)
    kern, erweitert = (snapshot.layer_fingerprint(kb, x) for x in ("kern", "erweitert"))
    assert kern is not None
    kb.add("kern", ["Neue Prüfanweisung"], ids=["fp"], metadatas=[{}])
    assert snapshot.layer_fingerprint(kb, "kern") != kern
    assert snapshot.layer_fingerprint(kb, "erweitert") == erweitert


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_snapshot_distances_match_definitions(space: str) -> None:
    rng = np.random.default_rng(7)
    raw = rng.normal(size=(50, 8)).astype(np.float32)
    query = rng.normal(size=(2, 8)).astype(np.float32)

    class _Col:
        id = "c"

        def get(self, limit: int, offset: int, include: list[str]) -> dict[str, Any]:
            part = raw[offset : offset + limit]
            ids = [f"r{i}" for i in range(offset, offset + len(part))]
            return {"ids": ids, "embeddings": part, "documents": ids, "metadatas": [{}] * len(ids)}

    snap = LayerMirror.load(_Col(), space, 0)  # type: ignore[arg-type]
    got = snap.distances(query)
    if space == "cosine":
        unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        want = 1 - (query / np.linalg.norm(query, axis=1, keepdims=True)) @ unit.T
    elif space == "ip":
        want = 1 - query @ raw.T
    else:
        want = ((query[:, None, :] - raw[None]) ** 2).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    res = snap.query(query, 5, None, None)
    assert res["ids"][0] == [f"r{i}" for i in np.argsort(want[0])[:5]]


def test_lexical_generation_bumps_per_layer_in_the_write_transaction() -> None:
    from osprag.search.lexical import LexicalIndex

    with LexicalIndex(None) as index:
        assert index.generation("kern") == 0
        index.upsert("kern", ["a", "b"], ["eins", "zwei"], [{}, {}])
        assert (index.generation("kern"), index.generation("erweitert")) == (1, 0)
        index.delete("kern", ["a"])
        index.upsert("erweitert", ["c"], ["drei"], [{}])
        assert (index.generation("kern"), index.generation("erweitert")) == (2, 1)
        index.clear("kern")
        assert index.generation("kern") == 3
        index.clear()
        assert (index.generation("kern"), index.generation("erweitert")) == (4, 2)


def test_empty_layer_snapshot(kb: KnowledgeBase) -> None:
    kb.add("kern", ["eins"], ids=["a"], metadatas=[{}])
    kb.delete("kern", ids=["a"])
    assert kb.query("eins", mode="dense").hits == []
    assert kb.query("eins", mode="hybrid").hits == []
