"""Choosing the hybrid weight: nDCG@10 of dense, lexical and fused rankings on the dev sets.

Each set is loaded into a throwaway embedded store through ``KnowledgeBase`` (paragraphs as
records, title prepended as the chunker would), every query is run once per leg with a deep
candidate list, and the fusion is replayed offline for a grid of alpha values and for RRF. alpha
is chosen on one set and reported on the other, then the reverse, so the default is not tuned
to the set it is judged on.

    .venv/bin/python bench/fusion_study.py [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Settings  # noqa: E402
from osprag.search.fusion import fuse  # noqa: E402

SETS = ("germanquad-dev", "xquad-de")
ALPHAS = [round(a * 0.1, 1) for a in range(11)]
DEPTH = 50


def load(name: str) -> tuple[list[dict[str, str]], dict[str, str], dict[str, set[str]]]:
    base = EVAL / name
    corpus = [json.loads(line) for line in (base / "corpus.jsonl").open(encoding="utf-8")]
    queries = {
        q["_id"]: q["text"]
        for q in (json.loads(line) for line in (base / "queries.jsonl").open(encoding="utf-8"))
    }
    qrels: dict[str, set[str]] = {}
    for i, line in enumerate((base / "qrels.tsv").open(encoding="utf-8")):
        if i == 0:
            continue
        qid, did, score = line.rstrip("\n").split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, set()).add(did)
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def ndcg10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def legs(name: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]],
                             dict[str, set[str]]]:
    corpus, queries, qrels = load(name)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "d", cache_dir=Path(tmp) / "c")
        with KnowledgeBase.open(settings) as kb:
            texts = [f"{d.get('title', '')}\n{d['text']}".strip() for d in corpus]
            kb.add("kern", texts, ids=[d["_id"] for d in corpus],
                   metadatas={"access_level": 1})
            qids = list(queries)
            dense: dict[str, dict[str, float]] = {}
            lexical: dict[str, dict[str, float]] = {}
            for mode, out in (("dense", dense), ("lexical", lexical)):
                for start in range(0, len(qids), 64):
                    batch = qids[start : start + 64]
                    results = kb.query([queries[q] for q in batch], n_results=DEPTH, mode=mode,
                                       include=[])
                    for qid, res in zip(batch, results, strict=True):
                        if mode == "dense":
                            out[qid] = {h.id: h.score for h in res.hits}
                        else:
                            out[qid] = {h.id: h.score for h in res.hits}
    return dense, lexical, qrels


def evaluate(dense: dict[str, dict[str, float]], lexical: dict[str, dict[str, float]],
             qrels: dict[str, set[str]], alpha: float | None) -> float:
    scores = []
    for qid, rel in qrels.items():
        if qid not in dense:
            continue
        if alpha is None:  # RRF, k = 60
            fused: dict[str, float] = {}
            for leg in (dense[qid], lexical[qid]):
                for rank, doc in enumerate(sorted(leg, key=leg.__getitem__, reverse=True)):
                    fused[doc] = fused.get(doc, 0.0) + 1 / (60 + rank + 1)
        else:
            raw = fuse({("k", d): s for d, s in dense[qid].items()},
                       {("k", d): s for d, s in lexical[qid].items()}, alpha)
            fused = {d: s for (_, d), s in raw.items()}
        ranked = sorted(fused, key=lambda d: (-fused[d], d))
        scores.append(ndcg10(ranked, rel))
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    table: dict[str, dict[str, float]] = {}
    for name in SETS:
        dense, lexical, qrels = legs(name)
        row = {f"{a:.1f}": evaluate(dense, lexical, qrels, a) for a in ALPHAS}
        row["rrf"] = evaluate(dense, lexical, qrels, None)
        table[name] = row
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    lines = ["| alpha (dense weight) | " + " | ".join(SETS) + " |",
             "|---|" + "---|" * len(SETS)]
    for key in [f"{a:.1f}" for a in ALPHAS] + ["rrf"]:
        label = {"0.0": "0.0 (lexical only)", "1.0": "1.0 (dense only)", "rrf": "RRF (k=60)"}
        lines.append(f"| {label.get(key, key)} | "
                     + " | ".join(f"{table[s][key]:.4f}" for s in SETS) + " |")
    picks = []
    for tune, judge in ((SETS[0], SETS[1]), (SETS[1], SETS[0])):
        best = max((k for k in table[tune] if k != "rrf"), key=lambda k: table[tune][k])
        picks.append(f"tuned on {tune}: alpha={best} → {judge} {table[judge][best]:.4f}")
    body = "\n".join([
        "Dense leg: all-MiniLM-L6-v2 (offline default); lexical leg: osprag's German/English "
        "BM25. Candidates: top 50 of each leg; fused = alpha × (cosine+1)/2 + (1 − alpha) × "
        "BM25/best BM25. nDCG@10 over all dev queries. " + machine_line(),
        "",
        *lines,
        "",
        *[f"- {p}" for p in picks],
        "",
        "Reproduce: `.venv/bin/python bench/fusion_study.py --write`",
    ])
    print(body)
    if args.write:
        write_section("fusion", "Hybrid fusion weight (retrieval quality)", body)


if __name__ == "__main__":
    main()
