"""The planner's exact leg over big-layer copies equals Chroma's filtered answer, stays fresh by
id after writes, and never widens a principal's clearance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from osprag import KnowledgeBase, Principal
from osprag.search import snapshot
from osprag.search.lexical import CHANGES_KEPT, LexicalIndex
from osprag.search.mirror import LayerMirror, level_conjuncts

from .test_snapshot import CASES, _answers, _configure, _fill

L1 = Principal("l1", clearance=1)
BIG = {"exact_search_below": 5, "exact_filtered_below": 10_000, "mirror_max_chunks": 10_000}


def _big_copies(kb: KnowledgeBase) -> dict[str, LayerMirror]:
    """Treat every layer as big (held via the background load) and wait for the copies."""
    _configure(kb, **BIG)
    kb.query("warm", mode="dense")  # starts the background loads
    snapshot.wait_for_copies(kb, 60)
    out = {}
    for name in kb.settings.layers:
        col = kb.collection_for(name)
        assert col is not None
        mirror = snapshot.snapshot_for(kb, name, col)
        assert mirror is not None
        out[name] = mirror
    return out


def test_planner_equals_chroma_filtered(kb: KnowledgeBase) -> None:
    _fill(kb)
    _configure(kb, exact_search_below=0, filter_overfetch=0, mirror_max_chunks=0)
    chroma = [_answers(kb, **kw) for kw in CASES]
    snapshot.wait_for_copies(kb, 60)
    col = kb.collection_for("kern")
    assert col is not None
    assert snapshot.snapshot_for(kb, "kern", col) is None  # no budget: big layers not held
    _big_copies(kb)
    clearance = {"access_level": {"$lte": 1}}
    assert snapshot.plan_exact(kb, "kern", col, clearance, None) is not None
    assert snapshot.plan_exact(kb, "kern", col, None, None) is None  # unfiltered: HNSW
    assert [_answers(kb, **kw) for kw in CASES] == chroma
    _configure(kb, exact_search_below=5, exact_filtered_below=5, mirror_max_chunks=10_000)
    kb.query("warm", mode="dense")
    snapshot.wait_for_copies(kb, 60)
    assert snapshot.plan_exact(kb, "kern", col, clearance, None) is None  # over budget: HNSW
    assert [_answers(kb, **kw) for kw in CASES] == chroma


def test_writes_are_applied_by_id_and_clearance_follows(kb: KnowledgeBase) -> None:
    _fill(kb, 20)
    held = _big_copies(kb)
    q = "Schweißnaht Zugprüfung Ultraschall"
    kb.add("kern", [q], ids=["new"], metadatas=[{"access_level": 1}])
    assert kb.query(q, mode="dense", n_results=1, principal=L1).hits[0].id == "new"
    col = kb.collection_for("kern")
    assert col is not None
    assert snapshot.snapshot_for(kb, "kern", col) is held["kern"]  # caught up, not reloaded
    kb.update("kern", ["new"], metadatas=[{"access_level": 4}])
    assert all(h.id != "new" for h in kb.query(q, mode="hybrid", principal=L1).hits)
    assert kb.query(q, mode="dense", n_results=1).hits[0].id == "new"
    kb.upsert("kern", [q], ids=["new"], metadatas=[{"access_level": 1}])
    assert kb.query(q, mode="dense", n_results=1, principal=L1).hits[0].id == "new"
    kb.delete("kern", ids=["new"])
    assert all(h.id != "new" for h in kb.query(q, mode="dense").hits)
    assert snapshot.snapshot_for(kb, "kern", col) is held["kern"]


def test_a_write_whose_lexical_half_failed_is_still_seen(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(kb, 20)
    _big_copies(kb)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(kb.lexical, "upsert", broken)
    q = "Lötstelle Röntgenprüfung Voids"
    with pytest.raises(RuntimeError):
        kb.add("erweitert", [q], ids=["x"], metadatas=[{"access_level": 1}])
    monkeypatch.undo()
    assert kb.query(q, mode="dense", n_results=1, principal=L1).hits[0].id == "x"


def test_blocks_admitted_by_access_level_conjuncts() -> None:
    rng = np.random.default_rng(3)
    levels: list[Any] = [1, 2, 3, 4, 1.0, "1", True, None]
    metas = [{} if v is None else {"access_level": v, "k": "a"} for v in levels]

    class _Col:
        id = "c"

        def get(self, limit: int, offset: int, include: list[str]) -> dict[str, Any]:
            ids = [f"r{i}" for i in range(len(levels))][offset : offset + limit]
            vecs = rng.normal(size=(len(ids), 4)).astype(np.float32)
            return {"ids": ids, "embeddings": vecs, "documents": ids, "metadatas": metas[offset:]}

    mirror = LayerMirror.load(_Col(), "cosine", 0)  # type: ignore[arg-type]
    from osprag.search.where_eval import compile_where

    for where in (
        {"access_level": {"$lte": 1}},
        {"$and": [{"access_level": {"$lte": 2}}, {"k": "a"}]},
        {"$and": [{"access_level": {"$lte": 3}}, {"$or": [{"k": "a"}, {"k": "b"}]}]},
        {"access_level": {"$in": [1, 4]}},
        {"access_level": {"$ne": 2}},
        {"$or": [{"access_level": 1}, {"k": "a"}]},  # reads another key: no narrowing
        None,
    ):
        groups = mirror.admitted(where)
        passing = compile_where(where)
        want = {i for i, m in enumerate(metas) if passing(m)}
        res = mirror.query(rng.normal(size=(1, 4)), 100, passing, None, groups)
        assert {int(r[1:]) for r in res["ids"][0]} == want, where
    assert len(level_conjuncts({"$or": [{"access_level": 1}, {"k": "a"}]})) == 0


def test_journal_names_the_ids_of_each_write() -> None:
    with LexicalIndex(None) as index:
        index.upsert("kern", ["a", "b"], ["eins", "zwei"], [{}, {}])
        seq = index.generation("kern")
        index.delete("kern", ["a"])
        index.upsert("kern", ["c"], ["drei"], [{}])
        index.upsert("erweitert", ["z"], ["vier"], [{}])
        assert index.changes_since("kern", seq) == (seq + 2, {"a", "c"})
        assert index.changes_since("kern", seq + 2) == (seq + 2, set())
        index.clear("kern")
        assert index.changes_since("kern", seq + 2) == (seq + 3, None)
        start = index.generation("erweitert")
        for i in range(CHANGES_KEPT + 1):
            index.delete("erweitert", [f"gone{i}"])
        assert index.changes_since("erweitert", start)[1] is None
        assert index.changes_since("erweitert", start + 1)[1] is not None
