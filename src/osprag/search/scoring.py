"""Per-hit calibrated relevance and the ``explain`` record, computed from a query's candidates.

Kept out of engine.py so the engine only asks "how relevant is each candidate" and the answer
(features, calibration entry, leg ranks) lives with the calibration code it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from osprag.search.calibration import LegScores, calibrate, leg_ranks

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase

Key = tuple[str, str]


class _Cand(Protocol):
    cosine: float | None
    bm25: float | None


def query_weight(kb: KnowledgeBase, query: str) -> float:
    """Summed weight of the query's analysed terms (the larger of the two languages)."""
    terms = kb.lexical.analyzer.query(query)
    return max((sum(w.values()) for w in terms.by_language.values()), default=1.0)


def score_hits(
    kb: KnowledgeBase,
    mode: str,
    query: str,
    visible: Mapping[Key, _Cand],
    scores: Mapping[Key, float],
    explain: bool,
) -> tuple[dict[Key, float], dict[Key, dict[str, Any]]]:
    """(calibrated relevance per key, explain record per key — empty unless asked)."""
    if not scores:
        return {}, {}
    model = "*" if mode == "lexical" else kb.embedder.identity.name
    weight = 1.0 if mode == "dense" else query_weight(kb, query)
    legs = {k: LegScores(visible[k].cosine, visible[k].bm25, float(s)) for k, s in scores.items()}
    relevance, feats, source = calibrate(mode, model, legs, weight)
    if not explain:
        return relevance, {}
    ranks = {  # sorted only here: most queries never ask for an explanation
        "dense": leg_ranks({k: c.cosine for k, c in legs.items() if c.cosine is not None}),
        "lexical": leg_ranks({k: c.bm25 for k, c in legs.items() if c.bm25 is not None}),
    }
    out: dict[Key, dict[str, Any]] = {}
    for i, key in enumerate(feats.keys):
        leg = legs[key]
        out[key] = {
            "dense": None
            if leg.cosine is None
            else {"score": leg.cosine, "rank": ranks["dense"].get(key)},
            "lexical": None
            if leg.bm25 is None
            else {"score": leg.bm25, "rank": ranks["lexical"].get(key)},
            "fused": leg.fused,
            "relevance": relevance[key],
            "calibration": source,
            "features": {n: float(v) for n, v in zip(feats.names, feats.rows[i], strict=True)},
        }
    return relevance, out
