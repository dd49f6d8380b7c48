"""``osp eval``: retrieval quality of the current configuration on a BEIR-style set.

The set (``corpus.jsonl`` {_id, title, text}, ``queries.jsonl`` {_id, text}, ``qrels.tsv``
query-id/corpus-id/score with a header) goes into a throwaway embedded store through osprag's own
chunker, every judged query runs through ``KnowledgeBase.query`` exactly as a user's would, and
chunk hits pool to their document by max score. Metrics are the usual BEIR/TREC ones: nDCG@10
(gain = qrel grade), Recall@10 and MRR@10, averaged over queries with at least one relevant
document. The TREC run file lists the top 100 documents per query by their corpus ``_id``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .embedding import Embedder
from .errors import InvalidInput
from .knowledge_base import MAX_RESULTS, KnowledgeBase
from .results import Hit

RUN_DEPTH = 100  # documents per query in the run file
K = 10
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class BeirSet:
    name: str
    corpus: list[dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{n} is not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise InvalidInput(f"{path}:{n} needs an object with an _id")
            yield row


def load_beir(directory: str | Path) -> BeirSet:
    """Read a BEIR-style folder; a missing file or bad line is one clear error."""
    base = Path(directory)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        if not (base / name).is_file():
            raise InvalidInput(
                f"{base} has no {name}",
                hint="a BEIR-style set needs corpus.jsonl, queries.jsonl and qrels.tsv",
            )
    corpus = [
        {"_id": str(r["_id"]), "title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
        for r in _jsonl(base / "corpus.jsonl")
    ]
    queries = {str(r["_id"]): str(r.get("text") or "") for r in _jsonl(base / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with (base / "qrels.tsv").open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            if len(parts) < 3 or not parts[2].lstrip("-").isdigit():
                raise InvalidInput(f"{base / 'qrels.tsv'}:{n}: expected query-id, corpus-id, score")
            if int(parts[2]) > 0:
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    if not corpus:
        raise InvalidInput(f"{base / 'corpus.jsonl'} holds no documents")
    judged = {q: t for q, t in queries.items() if q in qrels and t.strip()}
    if not judged:
        raise InvalidInput(f"{base} has no query with a relevant document in qrels.tsv")
    return BeirSet(base.name, corpus, judged, {q: qrels[q] for q in judged})


# ---------------------------------------------------------------- metrics


def ndcg_at(ranked: Sequence[str], rels: Mapping[str, int], k: int = K) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], rels: Mapping[str, int], k: int = K) -> float:
    return len(set(ranked[:k]) & set(rels)) / len(rels) if rels else 0.0


def mrr_at(ranked: Sequence[str], rels: Mapping[str, int], k: int = K) -> float:
    for i, d in enumerate(ranked[:k]):
        if d in rels:
            return 1.0 / (i + 1)
    return 0.0


# ---------------------------------------------------------------- store and runs


def doc_of(hit: Hit) -> str:
    return str(hit.metadata.get("eval_doc") or hit.id.rsplit("::", 1)[0])


@contextmanager
def eval_store(
    data: BeirSet,
    settings: Settings | None = None,
    *,
    layer: str | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[KnowledgeBase, str, int]]:
    """A throwaway embedded store holding the set's chunks: yields (kb, layer, chunk count).

    Settings (model, fusion, chunk size, ...) are the caller's; only the storage is replaced.
    The embedding cache stays where the settings put it when ``cache_dir`` is set explicitly,
    so a rerun does not embed the corpus again.
    """
    from .ingest.model import Block
    from .ingest.sync import make_chunker

    base = settings or load_settings()
    tmp = Path(tempfile.mkdtemp(prefix="osp-eval-"))
    try:
        local = base.model_copy(
            update={
                "storage": "embedded",
                "chroma_url": None,
                "data_dir": tmp / "data",
                "cache_dir": base.cache_dir or tmp / "cache",
            }
        )
        with KnowledgeBase.open(local, embedder=embedder) as kb:
            target = layer or local.ordered_layers()[0]
            kb.settings.layer(target)
            chunker = make_chunker(kb)
            texts: list[str] = []
            ids: list[str] = []
            metas: list[dict[str, Any]] = []
            pointers: dict[str, dict[str, Any]] = {}
            for doc in data.corpus:
                blocks = []
                if doc["title"]:
                    blocks.append(Block("heading", doc["title"], level=1))
                blocks.append(Block("paragraph", doc["text"] or doc["title"] or "-"))
                # As ingestion writes a file: its chunks name their document and revision and
                # a registry pointer makes that revision current (the lexical leg groups
                # chunks by it, docs/retrieval.md).
                doc_id = f"eval:{target}:{doc['_id']}"
                chunks = chunker.chunk(blocks)
                for chunk in chunks:
                    texts.append(chunk.text)
                    ids.append(f"{doc['_id']}::{chunk.index}")
                    metas.append(
                        {
                            "access_level": 1,
                            "eval_doc": doc["_id"],
                            "chunk_index": chunk.index,
                            "osp_doc": doc_id,
                            "osp_rev": "1",
                        }
                    )
                    if chunk.heading_path:
                        metas[-1]["section"] = " > ".join(chunk.heading_path)
                pointers[doc_id] = {"layer": target, "source": doc["_id"], "rev": "1"}
                pointers[doc_id].update(chunks=len(chunks), access_level=1)
            step = 256
            for start in range(0, len(texts), step):
                kb.write_chunks(
                    target,
                    texts[start : start + step],
                    ids=ids[start : start + step],
                    metadatas=metas[start : start + step],
                )
                if progress:
                    progress("embed", min(start + step, len(texts)), len(texts))
            registry = kb.store.documents()
            keys = list(pointers)
            for start in range(0, len(keys), step):
                part = keys[start : start + step]
                registry.write(
                    "upsert",
                    part,
                    [[1.0]] * len(part),
                    [str(pointers[k]["source"]) for k in part],
                    [pointers[k] for k in part],
                )
            yield kb, target, len(texts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_queries(
    kb: KnowledgeBase,
    queries: Mapping[str, str],
    *,
    mode: str | None = None,
    layers: Sequence[str] | None = None,
    chunk_depth: int = 300,
    batch: int = 32,
    explain: bool = False,
    progress: Progress | None = None,
) -> dict[str, list[Hit]]:
    """Every query's chunk hits (``chunk_depth`` deep), in ``KnowledgeBase.query``'s order."""
    qids = list(queries)
    out: dict[str, list[Hit]] = {}
    for start in range(0, len(qids), batch):
        part = qids[start : start + batch]
        results = kb.query(
            [queries[q] for q in part],
            layers=layers,
            n_results=min(chunk_depth, MAX_RESULTS),
            mode=mode,
            include=["metadatas"],
            explain=explain,
        )
        for qid, res in zip(part, results, strict=True):
            out[qid] = res.hits
        if progress:
            progress("query", min(start + batch, len(qids)), len(qids))
    return out


def pool_documents(hits: Sequence[Hit], depth: int = RUN_DEPTH) -> list[tuple[str, float]]:
    """Chunk hits → documents by max score, in rank order (ties keep the first chunk's rank)."""
    return pool_documents_scored([(doc_of(h), h.score) for h in hits], depth)


def pool_documents_scored(
    scored: Sequence[tuple[str, float]], depth: int = RUN_DEPTH
) -> list[tuple[str, float]]:
    """(document, chunk score) pairs → documents by their best chunk, best first."""
    best: dict[str, float] = {}
    for doc, score in scored:
        if score > best.get(doc, -math.inf):
            best[doc] = score
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:depth]


@dataclass
class EvalReport:
    dataset: str
    mode: str
    layer: str
    model: str
    alpha: float
    documents: int
    chunks: int
    queries: int
    ndcg_at_10: float
    recall_at_10: float
    mrr_at_10: float
    seconds: float
    run_file: str | None = None
    per_query: dict[str, float] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("per_query")
        return data


def score_runs(
    runs: Mapping[str, Sequence[tuple[str, float]]], qrels: Mapping[str, Mapping[str, int]]
) -> tuple[float, float, float, dict[str, float]]:
    """(nDCG@10, Recall@10, MRR@10, per-query nDCG@10) over the judged queries."""
    ndcg, rec, mrr = [], [], []
    per: dict[str, float] = {}
    for qid, rels in qrels.items():
        ranked = [d for d, _ in runs.get(qid, [])]
        per[qid] = ndcg_at(ranked, rels)
        ndcg.append(per[qid])
        rec.append(recall_at(ranked, rels))
        mrr.append(mrr_at(ranked, rels))
    n = max(len(ndcg), 1)
    return sum(ndcg) / n, sum(rec) / n, sum(mrr) / n, per


def write_run(path: str | Path, runs: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> None:
    """TREC format: ``qid Q0 docid rank score tag``, ranks from 1."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for qid, ranked in runs.items():
            for rank, (doc, score) in enumerate(ranked, 1):
                fh.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
    tmp.replace(target)


def evaluate(
    dataset_dir: str | Path,
    *,
    settings: Settings | None = None,
    mode: str | None = None,
    layer: str | None = None,
    run_out: str | Path | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Ingest a BEIR-style set into a throwaway store, run every judged query, score it."""
    from .search.engine import check_mode

    settings = settings or load_settings()
    chosen = check_mode(mode or settings.search_mode)
    data = load_beir(dataset_dir)
    started = time.perf_counter()
    with eval_store(data, settings, layer=layer, embedder=embedder, progress=progress) as (
        kb,
        target,
        chunks,
    ):
        per_doc = max(1.0, chunks / max(len(data.corpus), 1))
        depth = min(MAX_RESULTS, max(RUN_DEPTH, math.ceil(RUN_DEPTH * per_doc * 1.5)))
        hits = run_queries(
            kb, data.queries, mode=chosen, layers=[target], chunk_depth=depth, progress=progress
        )
        model = kb.embedder.identity.name if chosen != "lexical" else "-"
        alpha = settings.fusion_alpha
        if alpha is None:
            from .search.fusion import default_alpha

            alpha = default_alpha(kb.embedder.identity.name)
    runs = {qid: pool_documents(h) for qid, h in hits.items()}
    ndcg, rec, mrr, per = score_runs(runs, data.qrels)
    if run_out is not None:
        write_run(run_out, runs, f"osprag-{chosen}")
    return EvalReport(
        dataset=data.name,
        mode=chosen,
        layer=target,
        model=model,
        alpha=alpha,
        documents=len(data.corpus),
        chunks=chunks,
        queries=len(data.queries),
        ndcg_at_10=ndcg,
        recall_at_10=rec,
        mrr_at_10=mrr,
        seconds=time.perf_counter() - started,
        run_file=str(run_out) if run_out is not None else None,
        per_query=per,
    )


def collect_legs(
    kb: KnowledgeBase,
    queries: Mapping[str, str],
    *,
    layers: Sequence[str] | None = None,
    depth: int = 300,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Each leg's raw scores for every query, for replaying fusion and fitting calibration
    offline: {qid: {"weight": query term weight, "cands": [[chunk id, doc, cosine, bm25]]}}
    with None where a leg did not return the chunk within ``depth``."""
    from .search.scoring import query_weight

    legs: dict[str, dict[str, list[Any]]] = {}
    for mode in ("dense", "lexical"):
        hits = run_queries(
            kb,
            queries,
            mode=mode,
            layers=layers,
            chunk_depth=depth,
            explain=True,
            progress=progress,
        )
        for qid, found in hits.items():
            cands = legs.setdefault(qid, {})
            for hit in found:
                row = cands.setdefault(hit.id, [hit.id, doc_of(hit), None, None])
                leg = (hit.explain or {}).get(mode)
                if leg is not None:
                    row[2 if mode == "dense" else 3] = float(leg["score"])
    return {
        qid: {"weight": query_weight(kb, queries[qid]), "cands": list(cands.values())}
        for qid, cands in legs.items()
    }
