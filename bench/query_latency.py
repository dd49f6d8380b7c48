"""Query latency of ``KnowledgeBase.query()`` against raw chromadb, in one run.

Corpus: the GermanQuAD dev paragraphs (474), split over both layers. Queries: unique dev
questions, caches off (every query text is new to the process). Stages: embed, search (both
layers), merge. Baseline: chromadb ``collection.query`` with precomputed query vectors on the
same collections, so the ratio shows what osprag adds on top of Chroma itself.

    .venv/bin/python bench/query_latency.py [--queries 300] [--backend auto|torch|onnx]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Settings  # noqa: E402
from osprag.embedding import create_embedder  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load(n_queries: int) -> tuple[list[dict[str, Any]], list[str]]:
    base = EVAL / "germanquad-dev"
    corpus = [json.loads(line) for line in (base / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line)["text"] for line in (base / "queries.jsonl").open(encoding="utf-8")]
    unique = list(dict.fromkeys(queries))[: n_queries + 20]
    return corpus, unique


def run_backend(
    backend: str, corpus: list[dict[str, Any]], queries: list[str], modes: list[str]
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            cache_dir=Path(tmp) / "cache",
            embedding_backend=backend,
            embedding_cache=False,
        )
        embedder = create_embedder(settings)
        with KnowledgeBase.open(settings, embedder=embedder) as kb:
            half = len(corpus) // 2
            for layer, docs in (("kern", corpus[:half]), ("erweitert", corpus[half:])):
                kb.add(
                    layer,
                    [d["text"] for d in docs],
                    ids=[d["_id"] for d in docs],
                    metadatas=[
                        {"access_level": 1 + i % 4, "source": d["title"]}
                        for i, d in enumerate(docs)
                    ],
                )
            warm, measured = queries[:20], queries[20:]
            out = []
            for mode in modes:
                for q in warm:
                    kb.query(q, mode=mode)
                stages: dict[str, list[float]] = {
                    k: [] for k in ("embed", "search", "merge", "total")
                }
                wall: list[float] = []
                for q in measured:
                    t0 = time.perf_counter()
                    res = kb.query(q, n_results=5, mode=mode)
                    wall.append((time.perf_counter() - t0) * 1000)
                    for k in stages:
                        stages[k].append(res.timings_ms[k])
                out.append({"mode": mode, "wall": wall, "stages": stages})
            # raw chromadb on the same collections with precomputed vectors
            vectors = embedder.embed_queries(measured)
            cols = [kb.collection_for(layer) for layer in ("kern", "erweitert")]
            raw: list[float] = []
            for v in vectors:
                t0 = time.perf_counter()
                for col in cols:
                    assert col is not None
                    col._col.query(
                        query_embeddings=[v.tolist()],
                        n_results=5,
                        include=["documents", "metadatas", "distances"],
                    )
                raw.append((time.perf_counter() - t0) * 1000)
            name = type(embedder).__name__
    return [dict(r, backend=name, n=len(measured), raw=raw) for r in out]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--backend", action="append", choices=["auto", "torch", "onnx"])
    parser.add_argument("--mode", action="append", choices=["dense", "lexical", "hybrid"])
    args = parser.parse_args()
    backends = args.backend or ["torch", "onnx"]
    corpus, queries = load(args.queries)
    rows = []
    for backend in backends:
        try:
            runs = run_backend(
                backend, corpus, queries, args.mode or ["dense", "lexical", "hybrid"]
            )
        except Exception as exc:  # e.g. no ONNX export yet
            print(f"skip {backend}: {exc}", file=sys.stderr)
            continue
        for r in runs:
            raw_p50 = statistics.median(r["raw"])
            wall_p50 = statistics.median(r["wall"])
            rows.append(
                f"| {r['backend']} | {r['mode']} | {r['n']} | {wall_p50:.2f} | "
                f"{pct(r['wall'], 95):.2f} | {statistics.median(r['stages']['embed']):.2f} | "
                f"{statistics.median(r['stages']['search']):.2f} | "
                f"{statistics.median(r['stages']['merge']):.3f} | {raw_p50:.2f} | "
                f"{wall_p50 / raw_p50:.1f}× |"
            )
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"Corpus: GermanQuAD dev, {len(corpus)} paragraphs over both layers (cosine, M=16, "
            "ef_construction=200); unique queries, caches off (embedding cache, no result cache), "
            "n_results=5, full clearance; search = both layers' dense query plus the lexical "
            "leg and fetching lexical-only hits. The raw baseline only queries Chroma with a "
            "precomputed vector, so query()/raw includes embedding the query. "
            f"{machine_line()}",
            "",
            "| backend | mode | queries | query() p50 ms | p95 ms | embed p50 | search p50 "
            "| merge p50 | raw chromadb p50 (2 layers, precomputed vectors) | query() / raw |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Reproduce: `.venv/bin/python bench/query_latency.py`",
        ]
    )
    write_section("query_latency", "Query latency (in-process)", body)


if __name__ == "__main__":
    main()
