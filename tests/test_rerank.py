"""Cross-encoder reranking, with a tiny randomly initialised BERT the test builds (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osprag import KnowledgeBase, Settings
from osprag.embedding import Embedder
from osprag.errors import ModelNotFound

DOCS = [
    "Die Crimphöhe für 0,35 mm² beträgt 0,80 mm.",
    "Die Crimphöhe wird mit dem Mikrometer gemessen.",
    "Crimphöhe und Auszugskraft sind besondere Merkmale.",
    "Die Crimphöhe steht im Lenkungsplan.",
    "Reklamationen werden im 8D-Prozess bearbeitet.",
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-ce")
    words = sorted({w.strip(".,").lower() for d in DOCS for w in d.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _open(settings: Settings, embedder: Embedder, **kw: object) -> KnowledgeBase:
    return KnowledgeBase.open(settings.model_copy(update=kw), embedder=embedder)


def test_rerank_reorders_the_top_hits(
    settings: Settings, embedder: Embedder, tiny_cross_encoder: Path
) -> None:
    from osprag.search.rerank import load_cross_encoder

    with _open(settings, embedder) as kb:
        kb.add("kern", DOCS, ids=[f"d{i}" for i in range(5)], metadatas={"access_level": 1})
        plain = kb.query("Crimphöhe", n_results=5, explain=True)
    with _open(settings, embedder, rerank_model=str(tiny_cross_encoder), rerank_depth=4) as kb:
        res = kb.query("Crimphöhe", n_results=5, explain=True)
    head = res.hits[:4]
    scores = [h.explain["rerank"] for h in head if h.explain]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert {h.id for h in head} == {h.id for h in plain.hits[:4]}  # only the top 4 reordered
    assert res.hits[4].id == plain.hits[4].id and "rerank" not in (res.hits[4].explain or {})
    encoder = load_cross_encoder(str(tiny_cross_encoder))
    expected = encoder.predict([("Crimphöhe", DOCS[int(h.id[1])]) for h in head])
    assert scores == pytest.approx([float(s) for s in expected], abs=1e-5)
    assert [h.rank for h in res.hits] == [1, 2, 3, 4, 5]


def test_missing_rerank_model_is_one_clear_error(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    with _open(settings, embedder, rerank_model=str(tmp_path / "no-such-model")) as kb:
        kb.add("kern", DOCS[:3], ids=["a", "b", "c"], metadatas={"access_level": 1})
        with pytest.raises(ModelNotFound, match="cannot be loaded offline"):
            kb.query("Crimphöhe")
