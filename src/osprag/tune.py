"""``osp tune``: HNSW recall@10 against exact search, and latency, over a grid of ef_search.

Queries are a seeded sample of the layer's own stored vectors (no query log exists yet); each
sample's own record is removed from both result lists, so recall@10 is measured on its ten
nearest *other* chunks — a neighbour search on the layer's real data distribution, slightly
harder than most user questions, which land less close to any one chunk. Truth is exact cosine
(or the layer's space) over every vector of the layer, in numpy.

chromadb reads ef_search only when it loads an index, so each grid point is set in the
collection's stored configuration and measured through a fresh client (``Store.reopen``).
The chosen value stays in that configuration, where every new process (CLI, server worker)
reads it. In server mode the Chroma server holds the loaded index: the grid cannot be
measured from here, only the current value, and an applied value counts once the server
reloads the collection (restart it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput, LayerNotFound

if TYPE_CHECKING:
    import numpy as np

    from .knowledge_base import KnowledgeBase

DEFAULT_GRID = (10, 20, 40, 60, 100, 160, 240, 400)


@dataclass
class TunePoint:
    ef_search: int
    recall_at_10: float
    p50_ms: float
    p95_ms: float


@dataclass
class TuneReport:
    layer: str
    count: int
    samples: int
    target: float
    exact_in_memory: bool
    previous_ef_search: int
    chosen_ef_search: int
    applied: bool
    points: list[TunePoint] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tune_layer(
    kb: KnowledgeBase,
    layer: str,
    *,
    grid: tuple[int, ...] = DEFAULT_GRID,
    samples: int = 200,
    target: float = 0.95,
    apply: bool = True,
    seed: int = 0,
) -> TuneReport:
    """Measure the grid on ``layer`` and (``apply``) keep the smallest ef_search that reaches
    ``target`` recall@10, or the best one measured."""
    import numpy as np  # not at import time: `osp` starts without numpy

    if not 0 < target <= 1:
        raise InvalidInput(f"target recall must be in (0, 1], got {target}")
    if samples < 1 or not grid or min(grid) < 1:
        raise InvalidInput("samples and every ef_search must be >= 1")
    col = kb.collection_for(layer)
    if col is None:
        raise LayerNotFound(f"layer {layer!r} has no data yet", hint="ingest something first")
    conf = col.index_config()
    space = conf.space if conf else kb.settings.space
    previous = conf.ef_search if conf else kb.settings.ef_search
    ids, matrix = _all_vectors(col)
    if len(ids) < 12:
        raise InvalidInput(f"layer {layer!r} has {len(ids)} chunks; tuning needs at least 12")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=min(samples, len(ids)), replace=False)
    truth = _exact_neighbours(matrix, picked, space)
    queries = [matrix[i].tolist() for i in picked]
    server = kb.settings.effective_storage == "server"
    report = TuneReport(
        layer=layer,
        count=len(ids),
        samples=len(picked),
        target=target,
        exact_in_memory=len(ids) < kb.settings.exact_search_below,
        previous_ef_search=previous,
        chosen_ef_search=previous,
        applied=False,
    )
    points = [previous] if server else sorted(set(grid))
    try:
        for ef in points:
            if not server:
                _set_ef(kb, layer, ef)
            report.points.append(_measure(kb, layer, ef, queries, picked, ids, truth))
    finally:
        if not server:
            _set_ef(kb, layer, previous)
    good = [p for p in report.points if p.recall_at_10 >= target]
    best = min(good, key=lambda p: p.ef_search) if good else None
    if best is None:
        best = max(report.points, key=lambda p: (p.recall_at_10, -p.ef_search))
        m = conf.m if conf else kb.settings.hnsw_m
        efc = conf.ef_construction if conf else kb.settings.ef_construction
        report.advice.append(
            f"no ef_search reached recall@10 {target}; best {best.recall_at_10:.3f} at "
            f"{best.ef_search}. Rebuild with a denser graph: OSP_HNSW_M={2 * m} "
            f"OSP_EF_CONSTRUCTION={2 * efc} osp reindex --layer {layer}"
        )
    report.chosen_ef_search = best.ef_search
    if report.exact_in_memory:
        report.advice.append(
            f"the layer has fewer than exact_search_below={kb.settings.exact_search_below} "
            "chunks: queries search it exactly in memory and ef_search only matters if it grows"
        )
    if server:
        report.advice.append(
            "server mode: only the current ef_search was measured; an applied value counts "
            "once the Chroma server reloads the collection (restart it)"
        )
    if apply and best.ef_search != previous:
        _set_ef(kb, layer, best.ef_search)
        report.applied = True
    return report


def _set_ef(kb: KnowledgeBase, layer: str, ef: int) -> None:
    col = kb.collection_for(layer)
    assert col is not None
    col.set_ef_search(ef)
    if kb.settings.effective_storage != "server":
        kb.store.reopen()
        kb._cols.clear()  # handles of the old client are void


def _all_vectors(col: Any) -> tuple[list[str], np.ndarray[Any, Any]]:
    import numpy as np

    ids: list[str] = []
    blocks = []
    offset = 0
    while True:
        page = col.get(limit=5000, offset=offset, include=["embeddings"])
        if not page["ids"]:
            break
        ids.extend(page["ids"])
        blocks.append(np.asarray(page["embeddings"], np.float32))
        offset += len(page["ids"])
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
    return ids, matrix


def _exact_neighbours(
    matrix: np.ndarray[Any, Any], picked: np.ndarray[Any, Any], space: str
) -> list[set[int]]:
    import numpy as np

    q = matrix[picked]
    if space == "cosine":
        unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        dist = 1 - (unit[picked] @ unit.T)
    elif space == "ip":
        dist = 1 - q @ matrix.T
    else:
        dist = (q * q).sum(1)[:, None] + (matrix * matrix).sum(1)[None] - 2 * q @ matrix.T
    dist[np.arange(len(picked)), picked] = np.inf  # the sample itself
    top = np.argpartition(dist, 10, axis=1)[:, :10]
    return [set(row.tolist()) for row in top]


def _measure(
    kb: KnowledgeBase,
    layer: str,
    ef: int,
    queries: list[list[float]],
    picked: np.ndarray[Any, Any],
    ids: list[str],
    truth: list[set[int]],
) -> TunePoint:
    import numpy as np

    col = kb.collection_for(layer)
    assert col is not None
    slot = {rid: i for i, rid in enumerate(ids)}
    col.query([queries[0]], 11, None, None, [])  # loads the index
    times, recalls = [], []
    for qi, vec in enumerate(queries):
        t0 = time.perf_counter()
        res = col.query([vec], 11, None, None, [])
        times.append((time.perf_counter() - t0) * 1000)
        got = [slot[r] for r in res["ids"][0] if r in slot and slot[r] != int(picked[qi])][:10]
        recalls.append(len(set(got) & truth[qi]) / 10)
    arr = np.asarray(times)
    return TunePoint(
        ef, float(np.mean(recalls)), float(np.percentile(arr, 50)), float(np.percentile(arr, 95))
    )
