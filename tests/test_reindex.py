"""Reindex: new collection, alias flip, old layer intact when interrupted; model switches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from osprag import EmbeddingMismatch, KnowledgeBase, ModelIdentity
from osprag.embedding import Embedder, Vectors
from osprag.reindex import reindex

TEXTS = [
    f"Arbeitsanweisung {i}: Crimpkontakt prüfen, Crimphöhe {0.7 + i / 100:.2f} mm"
    for i in range(30)
]


class OtherModel:
    """The real model under another identity, with visibly different vectors (reversed)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self._identity = replace(inner.identity, name="example/other-model", weights_sha256="x")

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def embed_documents(self, texts: list[str]) -> Vectors:
        return np.ascontiguousarray(self.inner.embed_documents(texts)[:, ::-1])

    def embed_queries(self, texts: list[str]) -> Vectors:
        return np.ascontiguousarray(self.inner.embed_queries(texts)[:, ::-1])


def _fill(kb: KnowledgeBase) -> None:
    kb.add(
        "kern",
        TEXTS,
        ids=[f"t{i}" for i in range(len(TEXTS))],
        metadatas=[{"access_level": 1 + i % 4} for i in range(len(TEXTS))],
    )


def test_rebuild_reuses_vectors_and_flips_alias(kb: KnowledgeBase) -> None:
    _fill(kb)
    before = kb.query("Crimphöhe 0,75 mm", n_results=3)
    reports = reindex(kb, layers=["kern"])
    assert reports[0].reembedded is False
    assert reports[0].old_collection == "osp_kern"
    assert reports[0].new_collection == "osp_kern__v2"
    assert kb.store.aliases()["kern"] == "osp_kern__v2"
    assert "osp_kern" not in kb.store.list_collections()
    after = kb.query("Crimphöhe 0,75 mm", n_results=3)
    assert [h.id for h in after.hits] == [h.id for h in before.hits]
    assert kb.get("kern", ids=["t5"])[0].metadata["access_level"] == 2


def test_model_switch_is_detected_and_reindex_resolves_it(
    kb: KnowledgeBase, embedder: Embedder
) -> None:
    _fill(kb)
    other = OtherModel(embedder)
    switched = KnowledgeBase(kb.settings, kb.store, embedder=other)
    with pytest.raises(EmbeddingMismatch) as info:
        switched.query("Crimphöhe")
    message = str(info.value)
    assert "all-MiniLM-L6-v2" in message and "example/other-model" in message
    assert "osp reindex" in message
    with pytest.raises(EmbeddingMismatch):
        switched.add("kern", ["neu"])
    assert kb.count("kern") == len(TEXTS)  # nothing written
    reports = reindex(kb, embedder=other)
    assert {r.layer for r in reports} == {"kern", "erweitert"}
    assert reports[0].reembedded
    assert kb.query("Crimphöhe 0,75 mm").hits  # kb switched to the new model
    fresh = KnowledgeBase(kb.settings, kb.store, embedder=other)
    assert fresh.count("kern") == len(TEXTS)
    with pytest.raises(EmbeddingMismatch):
        KnowledgeBase(kb.settings, kb.store, embedder=embedder).query("Crimphöhe")


def test_interrupted_reindex_leaves_old_layer_queryable(kb: KnowledgeBase) -> None:
    _fill(kb)
    kb.add(
        "kern",
        [f"extra {i}" for i in range(1500)],
        embeddings=np.eye(384, dtype=np.float32)[np.arange(1500) % 384],
        ids=[f"x{i}" for i in range(1500)],
    )
    total = kb.count("kern")

    def boom(n: int) -> None:
        raise KeyboardInterrupt("killed half-way")

    with pytest.raises(KeyboardInterrupt):
        reindex(kb, layers=["kern"], progress=boom)
    assert kb.store.aliases()["kern"] == "osp_kern"
    assert kb.count("kern") == total
    assert kb.query("Crimphöhe 0,75 mm").hits[0].layer == "kern"
    # a leftover collection (as after SIGKILL) is cleaned up by the next reindex
    kb.create_layer_collection("kern", kb.embedder.identity)
    assert "osp_kern__v2" in kb.store.list_collections()
    reindex(kb, layers=["kern"])
    assert kb.count("kern") == total
    assert sorted(n for n in kb.store.list_collections() if n.startswith("osp_kern")) == [
        kb.store.aliases()["kern"]
    ]


def test_lexical_rebuild_streams_pages_and_builds_no_postings(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``osp reindex --lexical`` and the rebuild after every import/restore: pages of ``batch``
    records without vectors, rows written as they come, no in-memory postings built."""
    _fill(kb)
    query = "Crimphöhe 0,75 mm"
    before = [(h.id, h.score) for h in kb.query(query, mode="lexical", n_results=5).hits]
    assert kb.lexical.loaded  # the query loaded them: the rebuild must drop, not grow them
    col = kb.collection_for("kern")
    assert col is not None
    pages: list[tuple[int, list[str]]] = []
    real_get = col.get

    def spy(**kw: Any) -> Any:
        pages.append((kw["limit"], list(kw["include"])))
        return real_get(**kw)

    monkeypatch.setattr(col, "get", spy)
    assert kb.rebuild_lexical(["kern"], batch=7) == {"kern": 30}
    assert [limit for limit, _ in pages] == [7] * 5
    assert all("embeddings" not in include for _, include in pages)
    assert not kb.lexical.loaded
    after = [(h.id, h.score) for h in kb.query(query, mode="lexical", n_results=5).hits]
    assert after == before and kb.lexical.count("kern") == 30
