"""Chunking study: which chunk size, overlap and heading prefix retrieve long documents best.

On GermanQuAD-articles (233 long German Wikipedia articles, 1105 questions, one relevant article
each) every article is chunked per configuration, the chunks are embedded with the default model
(all-MiniLM-L6-v2, torch), and articles are ranked per query by their best chunk's cosine (exact
numpy search, the way a chunk index answers "which document"). Queries are split in two halves by
article: the configuration is chosen on half A and reported on half B, so the choice is not
scored on the questions that picked it.

Vectors are cached per configuration in bench/.cache/chunking/ (keyed by the chunk texts, so a
chunker change re-embeds), and a text already embedded for another configuration is reused.

    python bench/chunking_study.py            # print the table
    python bench/chunking_study.py --write    # and replace the table in docs/chunking.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EVAL, ROOT, machine_line  # noqa: E402

from osprag import Settings  # noqa: E402
from osprag.embedding import Embedder, create_embedder, resolve_model_path  # noqa: E402
from osprag.ingest.chunking import Chunker  # noqa: E402
from osprag.ingest.model import Block  # noqa: E402

DATA = EVAL / "germanquad-articles-dev"
CACHE = ROOT / "bench" / ".cache" / "chunking"
DOC = ROOT / "docs" / "chunking.md"
HEADING = re.compile(r"\s*(=+)\s*(.*?)\s*=+\s*")
K = 10


@dataclass(frozen=True)
class Config:
    max_tokens: int
    overlap: int
    heading_prefix: bool
    section_level: int = 6
    truncate: bool = False  # reference: the whole article as one text, truncated by the model

    @property
    def name(self) -> str:
        if self.truncate:
            return "no chunking (article truncated at 256)"
        name = f"{self.max_tokens}/{self.overlap}/{'prefix' if self.heading_prefix else 'plain'}"
        return name + (f"/merge≤H{self.section_level}" if self.section_level != 6 else "")


# Size × overlap without the heading prefix, then the prefix at the smallest and largest size.
# Not the full 2 × 3 × 3 grid: embedding ~0.4M tokens per configuration takes minutes on the
# shared 2-core study machine, so configurations that the trend already answered were left out.
GRID = [Config(128, overlap, False) for overlap in (0, 32, 64)]
GRID += [Config(192, overlap, False) for overlap in (0, 32, 64)] + [Config(254, 0, False)]
GRID += [Config(128, 0, True), Config(128, 64, True), Config(254, 0, True)]
EXTRA = [Config(96, 0, True), Config(254, 0, True, truncate=True)]


def article_blocks(article: dict[str, str]) -> list[Block]:
    """Title as H1, ``== x ==`` lines as headings of their depth, every other line a paragraph."""
    blocks = [Block("heading", article["title"], level=1)]
    for para in re.split(r"\n\s*\n", article["text"]):
        for line in para.split("\n"):
            if not line.strip():
                continue
            m = HEADING.fullmatch(line)
            blocks.append(
                Block("heading", m.group(2), level=len(m.group(1)))
                if m
                else Block("paragraph", line)
            )
    return blocks


def load() -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, str]]:
    def jsonl(name: str) -> list[dict[str, str]]:
        with (DATA / name).open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    qrels: dict[str, str] = {}
    for line in (DATA / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, aid, score = line.split("\t")
        if int(score) > 0:
            qrels[qid] = aid
    return jsonl("corpus.jsonl"), jsonl("queries.jsonl"), qrels


def half_of(article_id: str) -> str:
    return "A" if hashlib.sha1(article_id.encode()).digest()[0] % 2 == 0 else "B"


class Vectors:
    """Per-configuration .npy cache plus reuse of texts embedded for other configurations."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.known: dict[str, np.ndarray[Any, Any]] = {}
        self.embed_seconds = 0.0
        self.embedded = 0
        CACHE.mkdir(parents=True, exist_ok=True)

    def documents(self, texts: list[str]) -> np.ndarray[Any, Any]:
        digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:20]
        path = CACHE / f"docs-{digest}.npy"
        if path.exists():
            vectors: np.ndarray[Any, Any] = np.load(path)
        else:
            missing = sorted({t for t in texts if t not in self.known})
            if missing:
                started = time.perf_counter()
                fresh = self.embedder.embed_documents(missing)
                self.embed_seconds += time.perf_counter() - started
                self.embedded += len(missing)
                self.known.update(zip(missing, fresh, strict=True))
            vectors = np.stack([self.known[t] for t in texts])
            np.save(path, vectors)
        self.known.update(zip(texts, vectors, strict=True))
        return vectors

    def queries(self, texts: list[str]) -> np.ndarray[Any, Any]:
        digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:20]
        path = CACHE / f"queries-{digest}.npy"
        if path.exists():
            return np.asarray(np.load(path))
        vectors = self.embedder.embed_queries(texts)
        np.save(path, vectors)
        return vectors


@dataclass
class Result:
    config: Config
    chunks: int
    tokens: int
    chunk_seconds: float
    ranks: np.ndarray[Any, Any]  # 1-based rank of the relevant article per query


def chunk_texts(
    config: Config, articles: list[dict[str, str]], folder: Path
) -> tuple[list[str], list[int], int, float]:
    """Chunk texts, the article index of each, tokens embedded (incl. specials), seconds."""
    if config.truncate:
        texts = [f"{a['title']}\n{a['text']}" for a in articles]
        return texts, list(range(len(articles))), 256 * len(texts), 0.0
    chunker = Chunker.for_model(
        folder,
        config.max_tokens,
        config.overlap,
        heading_prefix=config.heading_prefix,
        section_level=config.section_level,
    )
    blocks = [article_blocks(a) for a in articles]
    started = time.perf_counter()
    chunked = [chunker.chunk(b) for b in blocks]
    seconds = time.perf_counter() - started
    texts = [c.text for cs in chunked for c in cs]
    owner = [i for i, cs in enumerate(chunked) for _ in cs]
    tokens = sum(c.tokens + chunker.counter.special_tokens for cs in chunked for c in cs)
    return texts, owner, tokens, seconds


def ranks_for(
    qvecs: np.ndarray[Any, Any], cvecs: np.ndarray[Any, Any], owner: list[int], relevant: list[int]
) -> np.ndarray[Any, Any]:
    """Rank of the relevant article when articles score by their best chunk (max cosine)."""
    starts = np.flatnonzero(np.r_[True, np.diff(owner) != 0])
    assert len(starts) == owner[-1] + 1, "every article needs at least one chunk"
    scores = np.maximum.reduceat(qvecs @ cvecs.T, starts, axis=1)  # queries × articles
    rel = scores[np.arange(len(relevant)), relevant]
    return np.asarray((scores > rel[:, None]).sum(axis=1) + 1)


def metrics(ranks: np.ndarray[Any, Any]) -> dict[str, float]:
    hit = ranks <= K
    return {
        "ndcg": float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0))),
        "recall": float(np.mean(hit)),
        "mrr": float(np.mean(np.where(hit, 1.0 / ranks, 0.0))),
    }


def per_query_ndcg(ranks: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(np.where(ranks <= K, 1.0 / np.log2(ranks + 1), 0.0))


def paired_ci(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> tuple[float, float]:
    """Mean paired difference and its 95 % half-width (normal approximation)."""
    diff = a - b
    return float(diff.mean()), float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff)))


TOLERANCE = 0.01
"""nDCG@10 differences below this are noise here: paired 95 % intervals are about ±0.015."""


def choose(results: list[Result], mask_a: np.ndarray[Any, Any]) -> Result:
    """Best nDCG@10 on half A; within TOLERANCE of it, the cheapest to embed and store."""
    chunked = [r for r in results if not r.config.truncate]
    best = max(metrics(r.ranks[mask_a])["ndcg"] for r in chunked)
    near = [r for r in chunked if metrics(r.ranks[mask_a])["ndcg"] >= best - TOLERANCE]
    return min(near, key=lambda r: (r.tokens, r.chunks))


def table(results: list[Result], halves: np.ndarray[Any, Any], chosen: Result) -> str:
    a, b = halves == "A", halves == "B"
    ref = per_query_ndcg(chosen.ranks[b])
    lines = [
        f"Half A: {int(a.sum())} queries (selection), half B: {int(b.sum())} queries (report); "
        f"split by article. Δ B: nDCG@10 difference to the chosen configuration on half B, "
        f"± 95 % paired interval.",
        "",
        "| config (max tokens/overlap/heading) | chunks | tokens embedded | chunk s "
        "| nDCG@10 A | nDCG@10 B | Recall@10 B | MRR@10 B | nDCG@10 all | Δ B vs chosen |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        ma, mb, mall = metrics(r.ranks[a]), metrics(r.ranks[b]), metrics(r.ranks)
        diff, half = paired_ci(per_query_ndcg(r.ranks[b]), ref)
        mark = " **(chosen)**" if r is chosen else ""
        lines.append(
            f"| {r.config.name}{mark} | {r.chunks} | {r.tokens:,} | {r.chunk_seconds:.2f} "
            f"| {ma['ndcg']:.3f} | {mb['ndcg']:.3f} | {mb['recall']:.3f} | {mb['mrr']:.3f} "
            f"| {mall['ndcg']:.3f} | {diff:+.3f} ± {half:.3f} |"
        )
    return "\n".join(lines)


def write_doc(body: str) -> None:
    start, end = "<!-- study:table -->", "<!-- /study:table -->"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# Chunking\n\n{start}\n{end}\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    DOC.write_text(pattern.sub(lambda _: f"{start}\n{body}\n{end}", text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/chunking.md")
    parser.add_argument("--grid-only", action="store_true", help="skip the extra configurations")
    args = parser.parse_args()

    articles, queries, qrels = load()
    index = {a["_id"]: i for i, a in enumerate(articles)}
    queries = [q for q in queries if q["_id"] in qrels]
    relevant = [index[qrels[q["_id"]]] for q in queries]
    halves = np.array([half_of(qrels[q["_id"]]) for q in queries])

    folder = resolve_model_path("all-MiniLM-L6-v2")
    vectors = Vectors(create_embedder(Settings(embedding_backend="torch")))
    qvecs = vectors.queries([q["text"] for q in queries])

    results: list[Result] = []
    for config in GRID + ([] if args.grid_only else EXTRA):
        texts, owner, tokens, seconds = chunk_texts(config, articles, folder)
        cvecs = vectors.documents(texts)
        results.append(
            Result(config, len(texts), tokens, seconds, ranks_for(qvecs, cvecs, owner, relevant))
        )
        m = metrics(results[-1].ranks)
        print(
            f"{config.name:40s} chunks={len(texts):5d} tokens={tokens:7d} "
            f"nDCG@10={m['ndcg']:.3f} (embedded so far: {vectors.embedded} texts, "
            f"{vectors.embed_seconds:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    chosen = choose(results, halves == "A")
    body = f"{machine_line()}\n\n{table(results, halves, chosen)}"
    print(body)
    if args.write:
        write_doc(body)


if __name__ == "__main__":
    main()
