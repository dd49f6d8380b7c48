"""Everything around one ``KnowledgeBase.query`` call that is not retrieval itself.

After ``KnowledgeBase.query`` caught up with the store (``freshness.py``): work out each query's
effective filter (caller's where ∧ clearance ∧ validity ∧ routed tags) and glossary expansions,
serve what the result cache holds, and run the rest through the engine — queries that share a
filter stay one batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from osprag.results import QueryResult
from osprag.search.cache import make_key, normalise_query
from osprag.search.engine import QueryPlan, run
from osprag.search.routing import VIEW_KEYS, LayerView, and_all, route, tag_clause, today

if TYPE_CHECKING:
    from osprag.generations import Generation
    from osprag.knowledge_base import KnowledgeBase


@dataclass(frozen=True)
class QueryOptions:
    include_history: bool = False
    route_tags: bool = True
    expand: bool = True
    use_cache: bool = True


def layer_view(kb: KnowledgeBase, layers: list[str], gens: tuple[Generation, ...]) -> LayerView:
    """Tags, statuses and dates present in ``layers``, recomputed only when a generation moved."""
    key = (tuple(layers), gens)
    memo = kb.freshness.memo
    cached = memo.get("layer_view")
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    view = LayerView(kb.lexical_for(layers).metadata_values(layers, VIEW_KEYS))
    memo["layer_view"] = (key, view)
    return view


def answer(kb: KnowledgeBase, plan: QueryPlan, options: QueryOptions) -> list[QueryResult]:
    started = time.perf_counter()  # the caller caught up with the store already
    names = [name for name, _ in plan.layers]
    gens = kb.freshness.generations(names)
    needs_view = bool(names) and (not options.include_history or options.route_tags)
    view = layer_view(kb, names, gens) if needs_view else LayerView({})
    validity = (
        None
        if options.include_history
        else view.validity_clause(kb.settings.obsolete_statuses, today())
    )
    known = view.tags(plan.principal.clearance) if options.route_tags else set()
    glossary = kb.glossary if options.expand and plan.mode != "dense" else None
    weight = kb.settings.glossary_weight
    cache = kb.result_cache if options.use_cache else None

    texts: list[str] = []
    wheres: list[dict[str, Any] | None] = []
    expansions: list[dict[str, float]] = []
    for query in plan.queries:
        text, tags = route(query, known) if known else (query, [])
        texts.append(text)
        wheres.append(and_all([plan.where, validity, tag_clause(tags)]))
        expansions.append(glossary.expansions(text, weight) if glossary else {})

    out: list[QueryResult | None] = [None] * len(plan.queries)
    keys: list[str] = []
    batches: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        key = make_key(
            q=normalise_query(text),
            layers=names,
            gens=gens,
            where=wheres[i],
            where_document=plan.where_document,
            clearance=plan.principal.clearance,
            n=plan.n_results,
            include=sorted(plan.include),
            min_score=plan.min_score,
            mode=plan.mode,
            alpha=plan.alpha,
            layer_min=plan.layer_min,
            expansions=expansions[i],
            explain=plan.explain,
            rerank=(kb.settings.rerank_model, kb.settings.rerank_depth),
        )
        keys.append(key)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            hit.query = plan.queries[i]
            hit.timings_ms = {"cache": (time.perf_counter() - started) * 1000}
            out[i] = hit
        else:
            batches.setdefault(json.dumps(wheres[i], sort_keys=True), []).append(i)

    for idxs in batches.values():
        sub = replace(
            plan,
            queries=[texts[i] for i in idxs],
            where=wheres[idxs[0]],
            expansions=[expansions[i] for i in idxs] if any(expansions[i] for i in idxs) else None,
        )
        for i, result in zip(idxs, run(kb, sub), strict=True):
            result.query = plan.queries[i]
            if cache is not None:
                cache.put(keys[i], result)
            out[i] = result
    return [r for r in out if r is not None]
