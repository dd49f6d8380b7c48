"""One query over several layers in dense, lexical or hybrid mode.

Both legs see the same effective filter (the caller's ``where`` AND the principal's clearance):
the dense leg passes it to Chroma, the lexical leg evaluates it with Chroma's semantics before
taking its top k, and lexical candidates are then fetched from Chroma with the filter again, so
a chunk the principal may not read can reach the result only through a bug in both.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from osprag.results import Hit, QueryResult, score_from_distance
from osprag.search import snapshot
from osprag.search.fusion import fuse
from osprag.search.quota import Ranked, apply_minimums
from osprag.search.rerank import rerank
from osprag.search.scoring import score_hits

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase
    from osprag.principal import Principal
    from osprag.store import Collection

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
OVERFETCH = 8  # chunks of a replaced document version may still sit in the index briefly


@dataclass
class _Candidate:
    layer: str
    id: str
    text: str | None
    meta: dict[str, Any]
    cosine: float | None = None
    distance: float | None = None
    bm25: float | None = None


@dataclass
class QueryPlan:
    queries: list[str]
    layers: list[tuple[str, Collection]]
    n_results: int
    where: dict[str, Any] | None
    where_document: dict[str, Any] | None
    include: list[str]
    min_score: float | None
    principal: Principal
    mode: str
    alpha: float
    layer_min: dict[str, int] = field(default_factory=dict)  # search/quota.py
    expansions: list[dict[str, float]] | None = None  # per query, search/glossary.py
    explain: bool = False


def run(kb: KnowledgeBase, plan: QueryPlan) -> list[QueryResult]:
    with snapshot.query_scope():
        return _run(kb, plan)


def _run(kb: KnowledgeBase, plan: QueryPlan) -> list[QueryResult]:
    depth = plan.n_results + OVERFETCH
    if plan.mode == "hybrid":
        depth = max(3 * plan.n_results, 30) + OVERFETCH
    if kb.settings.rerank_model:  # the cross-encoder needs its candidates
        depth = max(depth, kb.settings.rerank_depth + OVERFETCH)
    want = sorted(set(plan.include) | {"metadatas", "documents", "distances"})
    t0 = time.perf_counter()
    vectors = None
    if plan.mode != "lexical" and plan.layers:
        vectors = kb.embedder.embed_queries(plan.queries)
    t1 = time.perf_counter()
    per_query: list[dict[tuple[str, str], _Candidate]] = [{} for _ in plan.queries]
    if vectors is not None:
        in_memory = snapshot.all_in_memory(kb, plan.layers, plan.where_document, plan.where)
        answers = (_inline if in_memory else _parallel)(
            [
                functools.partial(
                    snapshot.dense_query,
                    kb,
                    name,
                    col,
                    vectors,
                    depth,
                    plan.where,
                    plan.where_document,
                    want,
                )
                for name, col in plan.layers
            ]
        )
        for (name, col), res in zip(plan.layers, answers, strict=True):
            space = kb._space(col)
            for qi in range(len(plan.queries)):
                for j, rid in enumerate(res["ids"][qi]):
                    distance = float(res["distances"][qi][j])
                    per_query[qi][(name, rid)] = _Candidate(
                        name,
                        rid,
                        res["documents"][qi][j],
                        dict(res["metadatas"][qi][j] or {}),
                        cosine=score_from_distance(distance, space),
                        distance=distance,
                    )
    if plan.mode != "dense" and plan.layers:
        _lexical_leg(kb, plan, per_query, depth)
    metas: dict[str, list[dict[str, Any]]] = {}
    for cands in per_query:
        for c in cands.values():
            metas.setdefault(c.layer, []).append(c.meta)
    stale = snapshot.stale_filter(kb, metas)
    t2 = time.perf_counter()
    results = [_rank(kb, plan, q, per_query[qi], stale) for qi, q in enumerate(plan.queries)]
    t3 = time.perf_counter()
    timings = {
        "embed": (t1 - t0) * 1000,
        "search": (t2 - t1) * 1000,
        "merge": (t3 - t2) * 1000,
        "total": (t3 - t0) * 1000,
    }
    for result in results:
        result.timings_ms = dict(timings)
    return results


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _inline(calls: Sequence[Callable[[], dict[str, Any]]]) -> list[dict[str, Any]]:
    return [call() for call in calls]


def _parallel(calls: Sequence[Callable[[], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run per-layer Chroma calls concurrently: Chroma releases the GIL while it searches, so
    two layers cost about one round trip instead of two (measured 3.8 → 2.5 ms)."""
    global _POOL
    if len(calls) < 2:
        return [call() for call in calls]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="osp-query")
    futures = [_POOL.submit(call) for call in calls]
    return [f.result() for f in futures]


def _lexical_leg(
    kb: KnowledgeBase,
    plan: QueryPlan,
    per_query: list[dict[tuple[str, str], _Candidate]],
    depth: int,
) -> None:
    index = kb.lexical_for([name for name, _ in plan.layers])
    cols = dict(plan.layers)
    missing: dict[str, set[str]] = {}
    for qi, query in enumerate(plan.queries):
        expansions = plan.expansions[qi] if plan.expansions else None
        for hit in index.search(
            query, layers=list(cols), k=depth, where=plan.where, expansions=expansions
        ):
            key = (hit.layer, hit.id)
            cand = per_query[qi].get(key)
            if cand is None:
                per_query[qi][key] = _Candidate(hit.layer, hit.id, None, {}, bm25=hit.score)
                missing.setdefault(hit.layer, set()).add(hit.id)
            else:
                cand.bm25 = hit.score
    fetched: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = {}
    for layer, ids in missing.items():
        res = snapshot.fetch(kb, layer, cols[layer], sorted(ids), plan.where, plan.where_document)
        for rid, doc, meta in zip(res["ids"], res["documents"], res["metadatas"], strict=True):
            fetched[(layer, rid)] = (doc, dict(meta or {}))
    for cands in per_query:
        for key in [k for k, c in cands.items() if c.text is None and not c.meta]:
            if key in fetched:
                cands[key].text, cands[key].meta = fetched[key]
            else:  # filtered out by where_document (or deleted meanwhile)
                del cands[key]


def _rank(
    kb: KnowledgeBase,
    plan: QueryPlan,
    query: str,
    cands: dict[tuple[str, str], _Candidate],
    stale: Callable[[Mapping[str, Any]], bool],
) -> QueryResult:
    visible = {
        k: c for k, c in cands.items() if kb._allowed(c.meta, plan.principal) and not stale(c.meta)
    }
    if plan.mode == "dense":
        scores = {k: c.cosine for k, c in visible.items() if c.cosine is not None}
    else:
        alpha = 0.0 if plan.mode == "lexical" else plan.alpha
        dense = {k: c.cosine for k, c in visible.items() if c.cosine is not None}
        lexical = {k: c.bm25 for k, c in visible.items() if c.bm25 is not None}
        scores = (
            fuse(dense, lexical, alpha)
            if plan.mode == "hybrid"
            else {k: v / max(lexical.values()) for k, v in lexical.items()}
        )
    relevance, explained = score_hits(kb, plan.mode, query, visible, scores, plan.explain)
    ranked: list[Ranked] = []
    for key, score in scores.items():
        if score is None or (plan.min_score is not None and relevance[key] < plan.min_score):
            continue
        cfg = kb.settings.layers[key[0]]
        ranked.append((score * cfg.weight, -cfg.priority, key[1], key, float(score)))
    ranked.sort(key=lambda t: (t[0], t[1], t[2]), reverse=True)

    def build(t: Ranked) -> Hit:
        cand = visible[t[3]]  # only returned (or reranked) hits pay for their metadata copy
        return Hit(
            id=cand.id,
            layer=cand.layer,
            text=cand.text if "documents" in plan.include else None,
            metadata=kb.public_metadata(cand.meta) if "metadatas" in plan.include else {},
            distance=cand.distance,
            score=t[4],
            relevance=relevance[t[3]],
            explain=explained.get(t[3]),
        )

    if kb.settings.rerank_model:
        pool = [build(t) for t in ranked[: max(plan.n_results, kb.settings.rerank_depth)]]
        texts = {(h.layer, h.id): visible[(h.layer, h.id)].text for h in pool}
        hits = rerank(kb.settings.rerank_model, query, pool, texts, kb.settings.rerank_depth)
        hits = hits[: plan.n_results]
    else:
        hits = [build(t) for t in apply_minimums(ranked, plan.n_results, plan.layer_min)]
    for rank, hit in enumerate(hits, 1):
        hit.rank = rank
    return QueryResult(query=query, hits=hits)


def check_mode(mode: str) -> str:
    from osprag.errors import InvalidInput

    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode
