"""Lexical-leg study: which analysis and BM25 settings retrieve best, and how fast the index is.

Quality: every variant indexes a BEIR-layout set (corpus.jsonl, queries.jsonl, qrels.tsv) with
``osprag.search.LexicalIndex`` and reports nDCG@10, Recall@10 and MRR@10 over all queries, the
index build time and the query p50. Documents go in WITHOUT a ``language`` field, the way an
external set arrives, so language detection is part of what is measured.

Performance: a synthetic corpus of GermanQuAD and XQuAD paragraphs repeated with variations
(shuffled sentences, dropped words, random part numbers and figures) at 1k and 100k chunks,
file-backed, measuring upsert throughput, reopen time and search latency with and without a
``where`` filter.

    python bench/lexical_study.py quality             # variant table on the dev sets
    python bench/lexical_study.py quality --sets DIR  # any BEIR-layout set(s), e.g. held-out
    python bench/lexical_study.py grid                # BM25 k1 x b on the dev sets
    python bench/lexical_study.py perf                # 1k and 100k chunks, real QM text
    python bench/lexical_study.py fts5                # the SQLite FTS5 alternative
    python bench/lexical_study.py all --write         # all, tables replaced in docs/lexical.md
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVAL, ROOT, machine_line  # noqa: E402

from osprag.search.analysis import Analyzer, AnalyzerConfig, QueryTerms  # noqa: E402
from osprag.search.lexical import K1, B, LexicalIndex  # noqa: E402

DOC = ROOT / "docs" / "lexical.md"
DEV_SETS = ("germanquad-dev", "xquad-de")
TITLE_SET = "germanquad-articles-dev"  # the only set with titles (its texts do not repeat them)
K = 10


@dataclass(frozen=True)
class Variant:
    name: str
    config: AnalyzerConfig
    title: bool = True
    k1: float = K1
    b: float = B
    union: bool = False  # score every document with the query terms of both stemmers


DEFAULT = AnalyzerConfig()
VARIANTS = [
    Variant(
        "no stemming, no folding, compounds off",
        replace(DEFAULT, stemming="none", fold="none", compounds="off"),
    ),
    Variant("no stemming, compounds off", replace(DEFAULT, stemming="none", compounds="off")),
    Variant(
        "English stemmer only, compounds off",
        replace(DEFAULT, stemming="english", compounds="off"),
    ),
    Variant(
        "German stemmer only, compounds off", replace(DEFAULT, stemming="german", compounds="off")
    ),
    Variant("both stemmers (by language), compounds off", replace(DEFAULT, compounds="off")),
    Variant(
        "both stemmers (union of stems), compounds off",
        replace(DEFAULT, compounds="off"),
        union=True,
    ),
    Variant("**default**: both, fold ä→a, edge pieces, stopwords, title", DEFAULT),
    Variant("default but fold ä→ae", replace(DEFAULT, fold="expand")),
    Variant("default but no folding", replace(DEFAULT, fold="none")),
    Variant("default but compounds as char 4-grams", replace(DEFAULT, compounds="ngram")),
    Variant("default but query piece weight 0.3", replace(DEFAULT, compound_query_weight=0.3)),
    Variant("default but pieces ≥ 5 letters", replace(DEFAULT, compound_part_length=5)),
    Variant("default but no stopwords", replace(DEFAULT, stopwords=False)),
    Variant("default but no title", DEFAULT, title=False),
    Variant("default but k1=0.9 b=0.4 (Anserini)", DEFAULT, k1=0.9, b=0.4),
]


class UnionAnalyzer(Analyzer):
    """Study only: every document gets the stems of both languages (the alternative to routing)."""

    def query(self, text: str) -> QueryTerms:
        routed = super().query(text)
        merged: dict[str, float] = {}
        for weights in routed.by_language.values():
            for term, weight in weights.items():
                merged[term] = max(merged.get(term, 0.0), weight)
        return QueryTerms({lang: merged for lang in routed.by_language})


def load_set(path: Path) -> tuple[list[dict[str, str]], dict[str, str], dict[str, set[str]]]:
    corpus = [json.loads(line) for line in (path / "corpus.jsonl").open(encoding="utf-8")]
    queries = {
        q["_id"]: q["text"]
        for q in map(json.loads, (path / "queries.jsonl").open(encoding="utf-8"))
    }
    qrels: dict[str, set[str]] = {}
    with (path / "qrels.tsv").open(encoding="utf-8") as lines:
        next(lines)
        for line in lines:
            qid, did, score = line.rstrip("\n").split("\t")[:3]
            if float(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def doc_text(doc: dict[str, str], title: bool) -> str:
    if title and doc.get("title"):
        return f"{doc['title']}\n\n{doc['text']}"
    return doc["text"]


def build(corpus: list[dict[str, str]], variant: Variant) -> tuple[LexicalIndex, float]:
    cls = UnionAnalyzer if variant.union else Analyzer
    index = LexicalIndex(None, analyzer=cls(variant.config), k1=variant.k1, b=variant.b)
    start = time.perf_counter()
    for batch in _batches(corpus, 500):
        index.upsert(
            "kern",
            [d["_id"] for d in batch],
            [doc_text(d, variant.title) for d in batch],
            [{"access_level": 1} for _ in batch],
        )
    index.search("warm up", k=1)  # builds the segments
    return index, time.perf_counter() - start


@dataclass(frozen=True)
class Result:
    ndcg: list[float]  # per query, for paired differences
    recall: float
    mrr: float
    p50_ms: float

    @property
    def mean_ndcg(self) -> float:
        return statistics.fmean(self.ndcg)


def evaluate(index: LexicalIndex, queries: dict[str, str], qrels: dict[str, set[str]]) -> Result:
    ndcg: list[float] = []
    recall = mrr = 0.0
    times = []
    for qid, text in queries.items():
        start = time.perf_counter()
        hits = index.search(text, k=K)
        times.append(time.perf_counter() - start)
        relevant = qrels[qid]
        gains = [1.0 if h.id in relevant else 0.0 for h in hits]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), K)))
        ndcg.append(dcg / ideal)
        recall += sum(gains) / len(relevant)
        mrr += next((1.0 / (i + 1) for i, g in enumerate(gains) if g), 0.0)
    n = len(queries)
    return Result(ndcg, recall / n, mrr / n, statistics.median(times) * 1000)


def paired_delta(result: Result, baseline: Result) -> str:
    """Mean nDCG@10 difference with a 95 % normal interval over the paired per-query values."""
    diffs = [a - b for a, b in zip(result.ndcg, baseline.ndcg, strict=True)]
    if not any(diffs):
        return "±0"
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{statistics.fmean(diffs):+.3f} ± {half:.3f}"


def quality(sets: list[Path], variants: list[Variant]) -> str:
    data = {s.name: load_set(s) for s in sets}
    header = "| variant | " + " | ".join(
        f"{name} nDCG@10 | Δ vs default | R@10 | MRR@10 | build s | p50 ms" for name in data
    )
    lines = [header + " |", "|---|" + "---:|" * (6 * len(data))]
    default = next(v for v in variants if v.config == DEFAULT and v.title and not v.union)
    baselines = {}
    for name, (corpus, queries, qrels) in data.items():
        index, _ = build(corpus, default)
        baselines[name] = evaluate(index, queries, qrels)
        index.close()
    for variant in variants:
        cells = []
        for name, (corpus, queries, qrels) in data.items():
            index, seconds = build(corpus, variant)
            m = evaluate(index, queries, qrels)
            index.close()
            cells += [
                f"{m.mean_ndcg:.3f}",
                paired_delta(m, baselines[name]),
                f"{m.recall:.3f}",
                f"{m.mrr:.3f}",
                f"{seconds:.2f}",
                f"{m.p50_ms:.2f}",
            ]
        lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def bm25_grid(sets: list[Path]) -> str:
    data = {s.name: load_set(s) for s in sets}
    lines = [
        "| k1 | b | " + " | ".join(f"{n} nDCG@10" for n in data) + " |",
        "|---:|---:|" + "---:|" * len(data),
    ]
    for k1 in (0.9, 1.2, 1.5, 2.0):
        for b in (0.4, 0.6, 0.75, 0.9):
            cells = []
            for corpus, queries, qrels in data.values():
                index, _ = build(corpus, Variant("grid", DEFAULT, k1=k1, b=b))
                cells.append(f"{evaluate(index, queries, qrels).mean_ndcg:.3f}")
                index.close()
            lines.append(f"| {k1} | {b} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


# -- performance ------------------------------------------------------------------------------

_WORDS = re.compile(r"\S+")


def synthetic(n: int, seed: int = 7) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """n chunks varied from the dev paragraphs: enough distinct text to grow the vocabulary."""
    rng = random.Random(seed)
    paragraphs = [d["text"] for s in DEV_SETS for d in load_set(EVAL / s)[0]]
    for i in range(n):
        words = _WORDS.findall(paragraphs[i % len(paragraphs)])
        start = rng.randrange(max(1, len(words) - 120))
        window = [w for w in words[start : start + 160] if rng.random() > 0.15]
        rng.shuffle(window[: len(window) // 2])
        window.insert(rng.randrange(len(window) + 1), f"KS-{rng.randrange(10000):04d}-{i % 97}")
        window.insert(rng.randrange(len(window) + 1), f"{rng.randrange(100)},{rng.randrange(100)}")
        doc_type = ("SOP", "FMEA", "PPAP")[i % 3]
        meta = {"access_level": 1 + i % 4, "language": "de", "doc_type": doc_type}
        yield f"c{i}", " ".join(window), meta


WHERE = {"$and": [{"access_level": {"$lte": 2}}, {"doc_type": "SOP"}]}
PERF_HEADER = [
    "| corpus | chunks | upsert chunks/s | reopen s | search p50 ms | p95 ms | "
    "p50 with where ms | p50 one layer ms | file MB |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
FTS5_TABLE = (
    "CREATE VIRTUAL TABLE f USING fts5(body, "
    "tokenize = \"unicode61 remove_diacritics 0 tokenchars '.,-%±'\")"
)


def qm_chunks(words: int = 150) -> list[tuple[str, str, dict[str, Any]]]:
    """Real QM text (qm-demo-automotive, German and English) cut into 150-word chunks."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for line in (EVAL / "qm-demo-automotive" / "corpus.jsonl").open(encoding="utf-8"):
        doc = json.loads(line)
        tokens = doc["text"].split()
        for i in range(0, len(tokens), words):
            meta = {"access_level": 1 + len(out) % 4, "doc_type": ("SOP", "FMEA")[len(out) % 2]}
            out.append((f"{doc['_id']}#{i}", " ".join(tokens[i : i + words]), meta))
    return out


def perf(sizes: Iterable[int]) -> str:
    """Each row starts a fresh index (and analyzer cache), so the upsert rate includes warm-up."""
    queries = [q for s in DEV_SETS for q in load_set(EVAL / s)[1].values()]
    sample = random.Random(1).sample(queries, 300)
    lines = list(PERF_HEADER)
    runs = [("qm-demo-automotive, 150 words", qm_chunks())]
    runs += [("synthetic (dev paragraphs varied)", list(synthetic(n))) for n in sizes]
    for name, chunks in runs:
        lines.append(_perf_row(name, chunks, sample))
        print(lines[-1], flush=True)
    return "\n".join(lines)


def _perf_row(name: str, chunks: list[tuple[str, str, dict[str, Any]]], sample: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lexical.sqlite"
        index = LexicalIndex(path)
        start = time.perf_counter()
        for i, batch in enumerate(_batches(chunks, 500)):
            index.upsert(
                ("kern", "erweitert")[i % 2],
                [c[0] for c in batch],
                [c[1] for c in batch],
                [c[2] for c in batch],
            )
        rate = len(chunks) / (time.perf_counter() - start)
        index.close()
        start = time.perf_counter()
        index = LexicalIndex(path)
        index.search("warm up", k=1)
        reopen = time.perf_counter() - start
        plain = _latencies(index, sample, {})
        filtered = _latencies(index, sample, {"where": WHERE})
        layer = _latencies(index, sample, {"layers": ["kern"]})
        index.close()
        size = path.stat().st_size / 1e6
    return (
        f"| {name} | {len(chunks):,} | {rate:,.0f} | {reopen:.2f} | "
        f"{statistics.median(plain):.2f} | {_p95(plain):.2f} | "
        f"{statistics.median(filtered):.2f} | {statistics.median(layer):.2f} | {size:.0f} |"
    )


def fts5(sizes: Iterable[int]) -> str:
    """SQLite FTS5 over the same analysed terms, ranked by its built-in ``bm25()``."""
    analyzer = Analyzer()
    queries = [q for s in DEV_SETS for q in load_set(EVAL / s)[1].values()]
    sample = random.Random(1).sample(queries, 300)
    lines = [
        "| chunks | FTS5 insert chunks/s | FTS5 p50 ms | FTS5 p95 ms |",
        "|---:|---:|---:|---:|",
    ]
    for n in sizes:
        db = sqlite3.connect(":memory:")
        db.execute(FTS5_TABLE)
        chunks = list(synthetic(n))
        start = time.perf_counter()
        for row, (_, text, _) in enumerate(chunks):
            body = " ".join(analyzer.document_terms(text, "de"))
            db.execute("INSERT INTO f (rowid, body) VALUES (?, ?)", (row, body))
        rate = n / (time.perf_counter() - start)
        times = []
        for q in sample:
            terms = analyzer.query(q).by_language["de"]
            expression = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
            start = time.perf_counter()
            db.execute(
                "SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT 10", (expression,)
            ).fetchall()
            times.append((time.perf_counter() - start) * 1000)
        db.close()
        lines.append(
            f"| {n:,} | {rate:,.0f} | {statistics.median(times):.2f} | {_p95(times):.2f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def _latencies(index: LexicalIndex, queries: list[str], options: dict[str, Any]) -> list[float]:
    for q in queries[:20]:
        index.search(q, k=K, **options)
    out = []
    for q in queries:
        start = time.perf_counter()
        index.search(q, k=K, **options)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_block(key: str, body: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    block = f"<!-- study:{key} -->\n{body.strip()}\n<!-- /study:{key} -->"
    pattern = re.compile(rf"<!-- study:{key} -->.*?<!-- /study:{key} -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no <!-- study:{key} --> block")
    DOC.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("what", choices=["quality", "grid", "perf", "fts5", "all"])
    parser.add_argument("--sets", nargs="*", type=Path, help="BEIR-layout folders to evaluate")
    parser.add_argument("--sizes", nargs="*", type=int, default=[1_000, 100_000])
    parser.add_argument("--write", action="store_true", help="replace tables in docs/lexical.md")
    args = parser.parse_args()
    print(machine_line())
    dev = [EVAL / s for s in DEV_SETS]
    if args.what in ("quality", "all"):
        table = quality(args.sets or [*dev, EVAL / TITLE_SET], VARIANTS)
        if args.write:
            write_block("quality", f"{machine_line()}\n\n{table}")
    if args.what in ("grid", "all"):
        table = bm25_grid(args.sets or dev)
        if args.write:
            write_block("grid", table)
    if args.what in ("perf", "all"):
        table = perf(args.sizes)
        if args.write:
            write_block("perf", f"{machine_line()}\n\n{table}")
    if args.what in ("fts5", "all"):
        table = fts5(args.sizes)
        if args.write:
            write_block("fts5", table)


if __name__ == "__main__":
    main()
