"""Query latency and dense recall at scale: the sample corpus, 10k and 100k chunks, clearance L1.

Corpora: the sample corpus is GermanQuAD dev (474 paragraphs over both layers, as in
``query_latency.py``); 10k and 100k are real text with real embeddings from
``scale_corpus.py`` (shared eval corpora in small word windows, 30 % kern, access levels
L1 35 / L2 35 / L3 20 / L4 10 %), embedded once with the ONNX backend and cached in
``~/.cache/osprag-bench``. Queries: unique GermanQuAD/XQuAD questions, embedded per query
(ONNX) as a user's would be, caches off. Principal: clearance 1 (L1), so every query carries
the clearance filter; full clearance is shown beside it.

Per size: ``KnowledgeBase.query()`` p50/p95 per mode with stages, interleaved with a
read-only knowledge base on the same data that holds no copies of big layers (the dense leg
as before the planner); raw chromadb on the same
collections (precomputed vectors, 2 layers, top 5, with and without the clearance filter) as
the baseline of the same run; the clearance strategies for the dense leg (Chroma filtered,
over-fetch with filtered fallback, a per-level partition, exact in memory over the whole layer,
the planner), interleaved; recall@10 of the dense leg against exact search; the memory the
copies take.

    .venv/bin/python bench/retrieval_scale.py            # sample, 10k, 100k (embeds once)
    .venv/bin/python bench/retrieval_scale.py --small    # sample and 10k, fewer queries
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale_corpus  # noqa: E402
from common import EVAL, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Principal, Settings  # noqa: E402
from osprag.embedding import Embedder, create_embedder  # noqa: E402
from osprag.filters import clearance_clause  # noqa: E402
from osprag.search import snapshot  # noqa: E402
from osprag.search.mirror import LayerMirror  # noqa: E402

L1 = Principal("reader-l1", clearance=1)
FULL = Principal("local", clearance=4)
DEPTH = 38  # the dense depth of a hybrid query for 5 results (engine: max(3n, 30) + 8)
MODES = ("dense", "lexical", "hybrid")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _sample_corpus() -> list[dict[str, Any]]:
    rows = [
        json.loads(line)
        for line in (EVAL / "germanquad-dev" / "corpus.jsonl").open(encoding="utf-8")
    ]
    half = len(rows) // 2
    return [
        {
            "id": r["_id"],
            "text": r["text"],
            "layer": "kern" if i < half else "erweitert",
            "access_level": 1 + i % 4,
        }
        for i, r in enumerate(rows)
    ]


def _open(
    tmp: Path, name: str, embedder: Embedder, read_only: bool = False, **kw: Any
) -> KnowledgeBase:
    settings = Settings(
        data_dir=tmp / name,
        cache_dir=tmp / f"{name}-cache",
        embedding_backend="onnx",
        embedding_cache=False,
        **kw,
    )
    return KnowledgeBase.open(settings, embedder=embedder, read_only=read_only)


def _fill(kb: KnowledgeBase, chunks: list[dict[str, Any]], vectors: Any) -> float:
    t0 = time.perf_counter()
    for layer in ("kern", "erweitert"):
        idx = [i for i, c in enumerate(chunks) if c["layer"] == layer]
        for s in range(0, len(idx), 5000):
            part = idx[s : s + 5000]
            kb.add(
                layer,
                [chunks[i]["text"] for i in part],
                ids=[chunks[i]["id"] for i in part],
                metadatas=[{"access_level": chunks[i]["access_level"]} for i in part],
                embeddings=None if vectors is None else np.asarray(vectors[part]),
            )
    return time.perf_counter() - t0


def _time_modes(
    kbs: dict[str, KnowledgeBase], queries: list[str], principal: Principal
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per knowledge base (same data, other settings) and mode: stage timings, the
    knowledge bases interleaved query by query so that host load hits them alike."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {name: {} for name in kbs}
    for mode in MODES:
        for kb in kbs.values():
            for q in queries[:10]:
                kb.query(q, mode=mode, principal=principal)
        for name in kbs:
            out[name][mode] = {k: [] for k in ("wall", "embed", "search", "merge")}
        for q in queries[10:]:
            for name, kb in kbs.items():
                t0 = time.perf_counter()
                res = kb.query(q, n_results=5, mode=mode, principal=principal, use_cache=False)
                stages = out[name][mode]
                stages["wall"].append((time.perf_counter() - t0) * 1000)
                for k in ("embed", "search", "merge"):
                    stages[k].append(res.timings_ms[k])
    return out


def _lexical_filter_cost(kb: KnowledgeBase, queries: list[str]) -> dict[str, float]:
    """The lexical leg alone (depth 38), with the L1 clearance filter and without."""
    index = kb.lexical_for(["kern", "erweitert"])
    where = clearance_clause(L1)
    out: dict[str, list[float]] = {"L1": [], "none": []}
    for q in queries[10:]:
        for label, wh in (("L1", where), ("none", None)):
            t0 = time.perf_counter()
            index.search(q, layers=["kern", "erweitert"], k=DEPTH, where=wh)
            out[label].append((time.perf_counter() - t0) * 1000)
    return {k: med(v) for k, v in out.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 1e6


def _raw(kb: KnowledgeBase, qvecs: Any, where: dict[str, Any] | None) -> list[float]:
    cols = [kb.collection_for(layer) for layer in ("kern", "erweitert")]
    times = []
    for v in qvecs:
        t0 = time.perf_counter()
        for col in cols:
            assert col is not None
            col._col.query(
                query_embeddings=[v.tolist()],
                n_results=5,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _exact_top(
    vectors: Any, ids: list[str], levels: np.ndarray[Any, Any], q: Any, k: int, clearance: int
) -> list[set[str]]:
    allowed = np.flatnonzero(levels <= clearance)
    sims = np.asarray(q, np.float32) @ np.asarray(vectors[allowed], np.float32).T
    top = np.argsort(-sims, axis=1)[:, :k]
    return [{ids[allowed[j]] for j in row} for row in top]


def _strategies(
    kb: KnowledgeBase,
    tmp: Path,
    name: str,
    embedder: Embedder,
    chunks: list[dict[str, Any]],
    vectors: Any,
    qvecs: Any,
) -> dict[str, Any]:
    """Dense leg of one L1 query over both layers, per clearance strategy, and its recall."""
    where = clearance_clause(L1)
    assert where is not None
    cols = {layer: kb.collection_for(layer) for layer in ("kern", "erweitert")}
    per_layer = {layer: [i for i, c in enumerate(chunks) if c["layer"] == layer] for layer in cols}
    exact_l1: dict[str, list[set[str]]] = {}
    exact_all: dict[str, list[set[str]]] = {}
    for layer, idx in per_layer.items():
        ids = [chunks[i]["id"] for i in idx]
        levels = np.asarray([chunks[i]["access_level"] for i in idx])
        exact_l1[layer] = _exact_top(vectors[idx], ids, levels, qvecs, 10, 1)
        exact_all[layer] = _exact_top(vectors[idx], ids, levels, qvecs, 10, 4)
    # a per-level partition: the L1 records of each layer in a collection of their own
    part = _open(tmp, f"{name}-part", embedder, exact_search_below=0, mirror_max_chunks=0)
    l1 = [c for c in chunks if c["access_level"] == 1]
    l1_idx = [i for i, c in enumerate(chunks) if c["access_level"] == 1]
    _fill(part, l1, np.asarray(vectors[l1_idx]))
    part_cols = {layer: part.collection_for(layer) for layer in cols}
    mirrors = {
        layer: snapshot.snapshot_for(kb, layer, col)  # type: ignore[arg-type]
        for layer, col in cols.items()
    }
    assert all(m is not None for m in mirrors.values()), "copies not held: raise the budget"
    groups = {layer: m.admitted(where) for layer, m in mirrors.items() if m is not None}
    predicate = snapshot.compile_where(where)
    want = ["documents", "metadatas", "distances"]

    def filtered(layer: str, v: Any) -> dict[str, Any]:
        col = cols[layer]
        assert col is not None
        return col.query([v], DEPTH, where, None, want)

    def overfetch(layer: str, v: Any) -> dict[str, Any]:
        col = cols[layer]
        assert col is not None
        return snapshot._overfetch(col, [v], DEPTH, where, None, want, 4)

    def partition(layer: str, v: Any) -> dict[str, Any]:
        col = part_cols[layer]
        assert col is not None
        return col.query([v], DEPTH, None, None, want)

    def exact(layer: str, v: Any) -> dict[str, Any]:
        mirror = mirrors[layer]
        assert mirror is not None
        return mirror.query(np.asarray([v]), DEPTH, predicate, None)

    def planner(layer: str, v: Any) -> dict[str, Any]:
        col = cols[layer]
        assert col is not None
        return snapshot.dense_query(kb, layer, col, [v], DEPTH, where, None, want)

    strategies: dict[str, Callable[[str, Any], dict[str, Any]]] = {
        "Chroma filtered query": filtered,
        "over-fetch ×4, filtered fallback": overfetch,
        "per-level partition (L1 collection)": partition,
        "exact in memory, whole layer (numpy + where_eval)": exact,
        "planner: exact over the admitted access-level blocks": planner,
    }
    results: dict[str, Any] = {label: {"times": [], "recall": []} for label in strategies}
    for qi, v in enumerate(qvecs):  # interleaved: host load hits every strategy alike
        for label, one in strategies.items():
            t0 = time.perf_counter()
            answers = {layer: one(layer, v) for layer in cols}
            results[label]["times"].append((time.perf_counter() - t0) * 1000)
            for layer, res in answers.items():
                got = set(res["ids"][0][:10])
                truth = exact_l1[layer][qi]
                results[label]["recall"].append(len(got & truth) / max(1, len(truth)))
    for v in results.values():
        v["recall"] = float(np.mean(v["recall"]))
    results["_admitted"] = {
        layer: (m.rows(groups[layer]), len(m)) for layer, m in mirrors.items() if m is not None
    }
    # unfiltered HNSW recall (full clearance)
    recall = []
    for qi, v in enumerate(qvecs):
        for layer, col in cols.items():
            assert col is not None
            got = set(col.query([v], 10, None, None, [])["ids"][0])
            truth = exact_all[layer][qi]
            recall.append(len(got & truth) / 10)
    results["_unfiltered_recall"] = float(np.mean(recall))
    part.close()
    return results


def _size(
    label: str,
    chunks: list[dict[str, Any]],
    vectors: Any,
    queries: list[str],
    embedder: Embedder,
    strategies: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        kb = _open(tmp, "kb", embedder, mirror_max_chunks=0)
        build = _fill(kb, chunks, vectors)
        kb.lexical_for(["kern", "erweitert"])
        counts = {layer: kb.count(layer) for layer in ("kern", "erweitert")}
        for principal in (L1, FULL):  # Chroma's HNSW indexes and the lexical index loaded
            kb.query("warm up", principal=principal, use_cache=False)
        rss0 = _rss_mb()
        kb.settings = kb.settings.model_copy(
            update={"mirror_max_chunks": Settings.model_fields["mirror_max_chunks"].default}
        )
        for layer in counts:
            snapshot.invalidate(kb, layer)
        t0 = time.perf_counter()
        kb.query("warm up", principal=L1, use_cache=False)  # starts the background copies
        snapshot.wait_for_copies(kb)
        copy_s = time.perf_counter() - t0
        kb.query("warm up", principal=L1, use_cache=False)
        memory = {"rss_mb": _rss_mb() - rss0, "copy_s": copy_s, **snapshot.memory(kb)}
        # the same data without copies of big layers: the dense leg as before the planner
        off = _open(tmp, "kb", embedder, read_only=True, mirror_max_chunks=0)
        exact = {
            layer: snapshot.plan_exact(kb, layer, col, clearance_clause(L1), None) is not None
            for layer in counts
            if (col := kb.collection_for(layer)) is not None  # type: ignore[arg-type]
        }
        modes_l1 = _time_modes({"on": kb, "off": off}, queries, L1)
        modes_full = _time_modes({"on": kb}, queries, FULL)
        lexical = _lexical_filter_cost(kb, queries)
        off.close()
        qvecs = embedder.embed_queries(queries[10:])
        where = clearance_clause(L1)
        raw = _raw(kb, qvecs, None)
        raw_l1 = _raw(kb, qvecs, where)
        strat = None
        if strategies:
            vecs = vectors if vectors is not None else _stored_vectors(kb, chunks)
            strat = _strategies(kb, tmp, "s", embedder, chunks, vecs, qvecs)
        kb.close()
    return {
        "label": label,
        "n": len(chunks),
        "counts": counts,
        "exact": exact,
        "build_s": build,
        "l1": modes_l1["on"],
        "l1_off": modes_l1["off"],
        "full": modes_full["on"],
        "lexical": lexical,
        "memory": memory,
        "raw": raw,
        "raw_l1": raw_l1,
        "strategies": strat,
        "queries": len(queries) - 10,
    }


def _stored_vectors(kb: KnowledgeBase, chunks: list[dict[str, Any]]) -> Any:
    out = np.zeros((len(chunks), 384), np.float32)
    pos = {c["id"]: i for i, c in enumerate(chunks)}
    for layer in ("kern", "erweitert"):
        col = kb.collection_for(layer)
        assert col is not None
        res = col.get(include=["embeddings"])
        for rid, vec in zip(res["ids"], res["embeddings"], strict=True):
            out[pos[rid]] = vec
    return out


EXACT_SIZES = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000)


def _exact_costs(vectors: Any, chunks: list[dict[str, Any]], qvecs: Any) -> dict[int, float]:
    """p50 ms of one layer's exact dense leg (L1 filter, depth 38) by layer size."""
    where = snapshot.compile_where(clearance_clause(L1))
    out = {}
    for n in EXACT_SIZES:
        if n > len(chunks):
            break
        snap = LayerMirror.from_records(
            [c["id"] for c in chunks[:n]],
            np.asarray(vectors[:n], dtype=np.float32),
            [c["text"] for c in chunks[:n]],
            [{"access_level": c["access_level"]} for c in chunks[:n]],
        )
        times = []
        for v in qvecs:
            t0 = time.perf_counter()
            snap.query(np.asarray([v]), DEPTH, where, None)
            times.append((time.perf_counter() - t0) * 1000)
        out[n] = med(times)
    return out


def _render(runs: list[dict[str, Any]], exact: dict[int, float] | None = None) -> str:
    lines = [
        "Principal: clearance L1 (every query carries the clearance filter; full clearance in "
        "brackets). Top 5, unique queries, caches off, query embedded per call (ONNX). "
        "Raw chromadb: both layers' `collection.query` with a precomputed vector (top 5), "
        "unfiltered and with the L1 filter, in the same run. "
        f"{machine_line()}",
        "",
        "| corpus | chunks (kern / erweitert) | L1 dense leg | mode | query() p50 ms L1 (full) "
        "| p95 ms L1 | embed p50 | search p50 | merge p50 | L1 p50 / search p50 without "
        "big-layer copies | raw chromadb p50 unfiltered / L1 | query() L1 / raw L1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        raw, raw_l1 = med(r["raw"]), med(r["raw_l1"])
        leg = " / ".join("exact" if r["exact"].get(x) else "HNSW" for x in ("kern", "erweitert"))
        for mode in MODES:
            s, f, o = r["l1"][mode], r["full"][mode], r["l1_off"][mode]
            lines.append(
                f"| {r['label']} | {r['n']:,} ({r['counts']['kern']:,} / "
                f"{r['counts']['erweitert']:,}) | {leg} | {mode} | {med(s['wall']):.2f} "
                f"({med(f['wall']):.2f}) | {pct(s['wall'], 95):.2f} | {med(s['embed']):.2f} | "
                f"{med(s['search']):.2f} | {med(s['merge']):.2f} | {med(o['wall']):.2f} / "
                f"{med(o['search']):.2f} | {raw:.2f} / {raw_l1:.2f} | "
                f"{med(s['wall']) / raw_l1:.2f}× |"
            )
    lines += [
        "",
        "Memory and lexical leg per corpus: copies held (chunks, float32 vector bytes), process "
        "RSS growth and wall time of loading the copies of big layers (after Chroma's and the "
        "lexical index were loaded); the lexical leg alone (depth "
        f"{DEPTH}, both layers) with the L1 filter and without:",
        "",
        "| corpus | chunks held | vector MB | RSS growth MB | copy s | lexical p50 ms L1 / none |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        m = r["memory"]
        held = sum(v for k, v in m.items() if k.endswith(".chunks"))
        vec = sum(v for k, v in m.items() if k.endswith(".vector_bytes")) / 1e6
        lines.append(
            f"| {r['label']} | {held:,} | {vec:.0f} | {m['rss_mb']:.0f} | {m['copy_s']:.1f} | "
            f"{r['lexical']['L1']:.2f} / {r['lexical']['none']:.2f} |"
        )
    strat_runs = [r for r in runs if r["strategies"]]
    if strat_runs:
        lines += [
            "",
            f"Clearance strategies for the dense leg (both layers, depth {DEPTH} = a hybrid "
            "query's, L1 principal, precomputed query vectors); recall@10 against exact "
            "filtered search over the same vectors:",
            "",
            "| corpus | strategy | p50 ms | p95 ms | recall@10 |",
            "|---|---|---|---|---|",
        ]
        for r in strat_runs:
            for label, v in r["strategies"].items():
                if label.startswith("_"):
                    continue
                lines.append(
                    f"| {r['label']} | {label} | {med(v['times']):.2f} | "
                    f"{pct(v['times'], 95):.2f} | {v['recall']:.3f} |"
                )
            lines.append(
                f"| {r['label']} | HNSW unfiltered (full clearance), recall only | | | "
                f"{r['strategies']['_unfiltered_recall']:.3f} |"
            )
        lines += ["", "Rows the L1 filter admits per layer (planner's count / layer size): "]
        lines[-1] += (
            "; ".join(
                f"{r['label']} "
                + ", ".join(
                    f"{layer} {a:,} / {n:,}"
                    for layer, (a, n) in r["strategies"]["_admitted"].items()
                )
                for r in strat_runs
            )
            + "."
        )
    if exact:
        lines += [
            "",
            "Exact dense leg of one layer in memory (numpy, one BLAS thread, L1 filter, depth "
            f"{DEPTH}), p50 ms by layer size — the basis of `exact_search_below`:",
            "",
            "| chunks in the layer | " + " | ".join(f"{n:,}" for n in exact) + " |",
            "|---|" + "---|" * len(exact),
            "| p50 ms | " + " | ".join(f"{v:.2f}" for v in exact.values()) + " |",
        ]
    lines += [
        "",
        "Build (kb.add with precomputed vectors, both layers, incl. lexical index): "
        + ", ".join(f"{r['label']} {r['build_s']:.0f} s" for r in runs)
        + ".",
        "",
        "Reproduce: `.venv/bin/python bench/retrieval_scale.py` (`--small`: sample + 10k; "
        "`--sizes 100000`: 100k only; the first run embeds the 100k chunks once, ~15 min on "
        "2 idle cores). Strategies and the with/without-copies columns are measured "
        "interleaved, query by query, in one run.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="sample + 10k, 60 queries")
    parser.add_argument("--sizes", default=None, help="comma list of sample,10000,100000")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="sizes whose vectors are not embedded yet use noisy copies (timing only)",
    )
    args = parser.parse_args(argv)
    sizes = (args.sizes or ("sample,10000" if args.small else "sample,10000,100000")).split(",")
    n_queries = args.queries or (60 if args.small else 200)
    queries = scale_corpus.load_queries(n_queries + 10)
    embedder = create_embedder(Settings(embedding_backend="onnx", embedding_cache=False))
    embedder.embed_queries(["warm up"])
    runs = []
    for size in sizes:
        if size == "sample":
            chunks, vectors = _sample_corpus(), None
            label = "sample (GermanQuAD dev)"
        else:
            n = int(size)
            try:
                chunks, vectors = scale_corpus.load(n, embed=not args.stand_in)
                label = f"{n // 1000}k"
            except FileNotFoundError:
                chunks, vectors = scale_corpus.stand_in(n)
                label = f"{n // 1000}k (stand-in vectors, timing only)"
        print(f"{label}: {len(chunks)} chunks", flush=True)
        run = _size(label, chunks, vectors, queries, embedder, strategies=size != "sample")
        run["vectors"], run["chunks"] = vectors, chunks
        runs.append(run)
        print(f"{label}: done", flush=True)
    big = max(runs, key=lambda r: r["n"])
    exact = None
    if big["vectors"] is not None:
        qvecs = embedder.embed_queries(queries[10:])
        exact = _exact_costs(big["vectors"], big["chunks"], qvecs)
    for r in runs:
        r.pop("vectors")
        r.pop("chunks")
    text = _render(runs, exact)
    print(text, flush=True)
    if not args.no_write:
        write_section("retrieval_scale", "Retrieval at scale (clearance L1)", text)
    return runs


if __name__ == "__main__":
    main()
