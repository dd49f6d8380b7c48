"""Exact dense search over an in-memory copy of small layers, and over-fetch for big filtered ones.

Below ``Settings.exact_search_below`` chunks a layer's ids, vectors, documents and metadata are
held in memory and the dense leg is a matrix product: exact (recall 1.0, no HNSW
approximation), and no Chroma round trip at all, also not for fetching the lexical leg's
candidates. ``where`` is evaluated with ``where_eval`` (Chroma's exact semantics) while walking
the candidates in distance order, so a filtered answer equals Chroma's filtered answer.

Freshness. A snapshot is served only while ``layer_fingerprint`` is unchanged. Every write path
updates the lexical index in one SQLite transaction, which now also bumps the layer's row in
the ``generations`` table (``LexicalIndex.generation``); every process on the machine shares
that file, so a write by another CLI process is seen by the next query here. The fingerprint
is read *before* a snapshot is loaded, so a write racing the load leaves the snapshot tagged
with the older generation and it is reloaded next time. Writes of this process also bump a
local counter (``invalidate``, called by the KnowledgeBase write paths before they write), so
a write whose lexical half failed does not leave a stale snapshot either. In server mode
another machine writes a lexical file we never see, so there is no cheap correct fingerprint
yet and snapshots are off: ``layer_fingerprint`` returns ``None``. The write log's per-layer
generation (epoch, sequence), read after catching up, is what must replace the lexical
generation here; then server mode can serve snapshots too.

Above the threshold Chroma's HNSW answers. A filtered HNSW query costs ~20× an unfiltered one
at 100k chunks, so a ``where`` (the principal's clearance is one) is first answered by an
unfiltered query for ``filter_overfetch`` × the wanted depth, filtered here; only when fewer than
the depth pass does the filtered query run. Whenever enough pass, the answer is exactly the
filtered one for the same candidates (docs/scale.md has the measurement behind the choice).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from osprag.errors import StoreError
from osprag.search.where_eval import compile_where

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase
    from osprag.store import Collection

log = logging.getLogger(__name__)
Predicate = Callable[[Mapping[str, Any]], bool]
DocPredicate = Callable[[str | None], bool]
PAGE = 5000


@dataclass
class Snapshot:
    """One layer's records; ``matrix`` is prepared for the space (unit rows for cosine)."""

    collection_id: str
    space: str
    ids: list[str]
    matrix: npt.NDArray[np.float32]
    sq_norms: npt.NDArray[np.float32]
    documents: list[str | None]
    metadatas: list[dict[str, Any]]
    slot_of: dict[str, int]

    @classmethod
    def load(cls, col: Collection, space: str) -> Snapshot:
        ids: list[str] = []
        docs: list[str | None] = []
        metas: list[dict[str, Any]] = []
        blocks: list[npt.NDArray[np.float32]] = []
        offset = 0
        while True:
            page = col.get(
                limit=PAGE, offset=offset, include=["embeddings", "documents", "metadatas"]
            )
            got = page["ids"]
            if not got:
                break
            ids.extend(got)
            docs.extend(page["documents"])
            metas.extend(dict(m or {}) for m in page["metadatas"])
            blocks.append(np.asarray(page["embeddings"], dtype=np.float32))
            offset += len(got)
            if len(got) < PAGE:
                break
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
        sq: npt.NDArray[np.float32] = np.zeros(0, np.float32)
        if blocks:
            sq = np.einsum("ij,ij->i", matrix, matrix).astype(np.float32)
        if space == "cosine" and blocks:
            matrix = (matrix / np.maximum(np.sqrt(sq), 1e-12)[:, None]).astype(np.float32)
        return cls(
            col.id,
            space,
            ids,
            np.ascontiguousarray(matrix, dtype=np.float32),
            sq,
            docs,
            metas,
            {rid: i for i, rid in enumerate(ids)},
        )

    def distances(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Chroma's distance per (query, record): 1 − cos, 1 − dot, or squared L2."""
        with _one_blas_thread():
            return self._distances(np.asarray(vectors, dtype=np.float32))

    def _distances(self, q: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.space == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            out = np.float32(1.0) - q @ self.matrix.T
        else:
            dots = q @ self.matrix.T
            if self.space == "ip":
                out = np.float32(1.0) - dots
            else:
                q_sq = np.einsum("ij,ij->i", q, q)[:, None]
                out = np.maximum(q_sq + self.sq_norms - 2 * dots, 0)
        return np.asarray(out, dtype=np.float32)

    def query(
        self,
        vectors: Any,
        k: int,
        where: Predicate | None,
        document: DocPredicate | None,
    ) -> dict[str, Any]:
        """Chroma-shaped ``query`` answer: the k nearest records that pass both filters."""
        out: dict[str, Any] = {"ids": [], "distances": [], "documents": [], "metadatas": []}
        if not self.ids:
            for key in out:
                out[key] = [[] for _ in range(len(vectors))]
            return out
        dist = self.distances(np.asarray(vectors, dtype=np.float32))
        for row in dist:
            slots = self._nearest(row, k, where, document)
            out["ids"].append([self.ids[s] for s in slots])
            out["distances"].append([float(row[s]) for s in slots])
            out["documents"].append([self.documents[s] for s in slots])
            out["metadatas"].append([self.metadatas[s] for s in slots])
        return out

    def _nearest(
        self,
        row: npt.NDArray[np.float32],
        k: int,
        where: Predicate | None,
        document: DocPredicate | None,
    ) -> list[int]:
        n = row.size
        want = min(n, k if where is None and document is None else max(4 * k, 64))
        head = np.argpartition(row, want - 1)[:want] if want < n else np.arange(n)
        head = head[np.lexsort((head, row[head]))]
        if where is None and document is None:
            return [int(s) for s in head[:k]]
        hits = self._walk(head.tolist(), k, where, document)
        if len(hits) < k and want < n:
            rest = np.setdiff1d(np.arange(n), head, assume_unique=True)
            rest = rest[np.lexsort((rest, row[rest]))]
            hits += self._walk(rest.tolist(), k - len(hits), where, document)
        return hits

    def _walk(
        self, order: list[int], k: int, where: Predicate | None, document: DocPredicate | None
    ) -> list[int]:
        hits: list[int] = []
        for slot in order:
            if where is not None and not where(self.metadatas[slot]):
                continue
            if document is not None and not document(self.documents[slot]):
                continue
            hits.append(slot)
            if len(hits) == k:
                break
        return hits

    def get(
        self, ids: Sequence[str], where: Predicate | None, document: DocPredicate | None
    ) -> dict[str, Any]:
        """Chroma-shaped ``get`` answer for known ids that pass both filters."""
        out: dict[str, Any] = {"ids": [], "documents": [], "metadatas": []}
        for rid in ids:
            slot = self.slot_of.get(rid)
            if slot is None:
                continue
            if where is not None and not where(self.metadatas[slot]):
                continue
            if document is not None and not document(self.documents[slot]):
                continue
            out["ids"].append(rid)
            out["documents"].append(self.documents[slot])
            out["metadatas"].append(self.metadatas[slot])
        return out


_BLAS: Any = None


def _one_blas_thread() -> Any:
    """A query-sized product is ~1 ms on one core; OpenBLAS threads woken right after the
    ONNX runtime's were measured at ~20 ms on a busy 2-core machine (bench/retrieval_scale)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


@dataclass
class _LayerState:
    fingerprint: Hashable
    collection_id: str
    count: int
    snapshot: Snapshot | None
    # Current-revision pointers read while this copy is valid (None = no pointer): they
    # change only with a write, which changes the fingerprint and drops this state.
    revisions: dict[str, str | None] = field(default_factory=dict)


@dataclass
class _KbState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: dict[str, int] = field(default_factory=dict)
    layers: dict[str, _LayerState] = field(default_factory=dict)


_STATES: weakref.WeakKeyDictionary[KnowledgeBase, _KbState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _kb_state(kb: KnowledgeBase) -> _KbState:
    with _STATES_LOCK:
        state = _STATES.get(kb)
        if state is None:
            state = _STATES[kb] = _KbState()
        return state


def invalidate(kb: KnowledgeBase, layer: str) -> None:
    """A write of this process to ``layer`` is about to happen: never serve the old copy."""
    state = _kb_state(kb)
    with state.lock:
        state.local[layer] = state.local.get(layer, 0) + 1
        state.layers.pop(layer, None)


def layer_fingerprint(kb: KnowledgeBase, layer: str) -> Hashable | None:
    """Changes whenever any process wrote ``layer``; ``None`` = cannot tell.

    The layer's generation (epoch, sequence) covers other machines in server mode, where the
    query has caught up with the write log first (freshness.py); on an embedded store the
    lexical index's own counter, bumped in the write's transaction, is read as well. Both are
    SQLite reads of a few µs.
    """
    local = _kb_state(kb).local.get(layer, 0)
    generation = kb.generation(layer)
    if kb.settings.effective_storage == "server":
        return (local, generation)
    return (local, kb.lexical.generation(layer), generation)


def _layer(kb: KnowledgeBase, name: str, col: Collection) -> _LayerState | None:
    fingerprint = layer_fingerprint(kb, name)
    if fingerprint is None:
        return None
    state = _kb_state(kb)
    with state.lock:
        cached = state.layers.get(name)
    if cached is not None and cached.fingerprint == fingerprint and cached.collection_id == col.id:
        return cached
    count = col.count()
    snap = None
    if count < kb.settings.exact_search_below:
        try:
            snap = Snapshot.load(col, kb._space(col))
        except StoreError as exc:
            # An embedded reader's Chroma does not see vectors another process added since it
            # loaded the index ("Error finding id"); its own HNSW query omits them too, so
            # answering through Chroma is as fresh as this process can be.
            log.info("layer %s: no in-memory copy (%s); searching through Chroma", name, exc)
    fresh = _LayerState(fingerprint, col.id, count, snap)
    with state.lock:
        state.layers[name] = fresh
    return fresh


def snapshot_for(kb: KnowledgeBase, name: str, col: Collection) -> Snapshot | None:
    """The layer's in-memory copy when it is small enough and provably fresh."""
    layer = _layer(kb, name, col)
    return layer.snapshot if layer is not None else None


def all_in_memory(
    kb: KnowledgeBase,
    layers: Sequence[tuple[str, Collection]],
    where_document: Mapping[str, Any] | None,
) -> bool:
    """True when every layer's dense leg runs in memory (no Chroma call to overlap)."""
    if not supports_document_filter(where_document):
        return False
    return all(snapshot_for(kb, name, col) is not None for name, col in layers)


def document_predicate(where_document: Mapping[str, Any] | None) -> DocPredicate | None:
    """Chroma's ``where_document`` in Python, or ``None`` when it must run in Chroma.

    ``$contains``/``$not_contains`` are plain case-sensitive substring tests, identical here;
    regular expressions go to Chroma, whose Rust regex dialect differs from Python's.
    """
    if where_document is None:
        return None
    return _doc(where_document)


class _NeedsChroma(Exception):
    pass


def _doc(spec: Mapping[str, Any]) -> DocPredicate:
    ((op, value),) = spec.items()
    if op in ("$and", "$or"):
        parts = [_doc(v) for v in value]
        if op == "$and":
            return lambda d: all(p(d) for p in parts)
        return lambda d: any(p(d) for p in parts)
    if op == "$contains":
        return lambda d: d is not None and value in d
    if op == "$not_contains":
        return lambda d: d is None or value not in d
    raise _NeedsChroma(op)


def supports_document_filter(where_document: Mapping[str, Any] | None) -> bool:
    try:
        document_predicate(where_document)
    except _NeedsChroma:
        return False
    return True


def dense_query(
    kb: KnowledgeBase,
    name: str,
    col: Collection,
    vectors: Any,
    depth: int,
    where: dict[str, Any] | None,
    where_document: dict[str, Any] | None,
    include: Sequence[str],
) -> dict[str, Any]:
    """The dense leg for one layer: exact in memory, over-fetch, or Chroma's filtered query."""
    layer = _layer(kb, name, col)
    exact_doc = supports_document_filter(where_document)
    if layer is not None and layer.snapshot is not None and exact_doc:
        predicate = compile_where(where) if where is not None else None
        return layer.snapshot.query(vectors, depth, predicate, document_predicate(where_document))
    factor = kb.settings.filter_overfetch
    if where is not None and exact_doc and factor > 0:
        return _overfetch(col, vectors, depth, where, where_document, include, factor)
    return col.query(vectors, depth, where, where_document, include)


def _overfetch(
    col: Collection,
    vectors: Any,
    depth: int,
    where: dict[str, Any],
    where_document: dict[str, Any] | None,
    include: Sequence[str],
    factor: int,
) -> dict[str, Any]:
    """Unfiltered HNSW for ``factor`` × depth, filtered here; Chroma's filtered query for the
    queries where fewer than ``depth`` candidates pass."""
    wide = max(depth * factor, depth + 32)
    want = sorted(set(include) | {"metadatas", "documents", "distances"})
    res = col.query(vectors, wide, None, None, want)
    predicate = compile_where(where)
    document = document_predicate(where_document)
    out: dict[str, Any] = {"ids": [], "distances": [], "documents": [], "metadatas": []}
    redo: list[int] = []
    for qi in range(len(res["ids"])):
        keep = [
            j
            for j, meta in enumerate(res["metadatas"][qi])
            if predicate(meta or {}) and (document is None or document(res["documents"][qi][j]))
        ][:depth]
        if len(keep) < depth and len(res["ids"][qi]) >= wide:
            redo.append(qi)
        for key in out:
            out[key].append([res[key][qi][j] for j in keep])
    if redo:
        again = col.query([vectors[i] for i in redo], depth, where, where_document, want)
        for pos, qi in enumerate(redo):
            for key in out:
                out[key][qi] = again[key][pos]
    return out


def fetch(
    kb: KnowledgeBase,
    name: str,
    col: Collection,
    ids: Sequence[str],
    where: dict[str, Any] | None,
    where_document: dict[str, Any] | None,
) -> dict[str, Any]:
    """Documents and metadata of the lexical leg's candidates, from memory when possible."""
    snap = snapshot_for(kb, name, col)
    in_python = supports_document_filter(where_document)
    predicate = compile_where(where) if where is not None else None
    if snap is not None and in_python:
        return snap.get(ids, predicate, document_predicate(where_document))
    # By id only: Chroma evaluates a `where` next to ids over far more than the ids (a
    # clearance filter made this get cost ~1 s at 100k chunks); where_eval has its semantics.
    res = col.get(
        ids=list(ids),
        where=None,
        where_document=None if in_python else where_document,
        include=["documents", "metadatas"],
    )
    document = document_predicate(where_document) if in_python else None
    out: dict[str, Any] = {"ids": [], "documents": [], "metadatas": []}
    for rid, doc, meta in zip(res["ids"], res["documents"], res["metadatas"], strict=True):
        if predicate is not None and not predicate(meta or {}):
            continue
        if document is not None and not document(doc):
            continue
        out["ids"].append(rid)
        out["documents"].append(doc)
        out["metadatas"].append(meta)
    return out


def stale_filter(
    kb: KnowledgeBase, metas_by_layer: Mapping[str, Sequence[Mapping[str, Any]]]
) -> Callable[[Mapping[str, Any]], bool]:
    """True for chunks of a document version that is not current (atomic replacement).

    Reading the pointers cost a Chroma round trip per query (~3 ms, half a lexical query on
    the sample corpus). A layer served from memory keeps the pointers it has read with its
    copy: both belong to the same fingerprint, so the reader sees one consistent state of the
    layer; layers searched through Chroma read them live, as before.
    """
    current: dict[str, str | None] = {}
    live: set[str] = set()
    state = _kb_state(kb)
    for name, metas in metas_by_layer.items():
        doc_ids = {str(m["osp_doc"]) for m in metas if m and "osp_doc" in m}
        if not doc_ids:
            continue
        with state.lock:
            layer = state.layers.get(name)
        if layer is None or layer.snapshot is None:
            live |= doc_ids
            continue
        missing = sorted(doc_ids - layer.revisions.keys())
        if missing:
            found = kb.current_revisions(missing)
            layer.revisions.update({d: found.get(d) for d in missing})
        current.update({d: layer.revisions[d] for d in doc_ids})
    if live:
        current.update(kb.current_revisions(sorted(live)))
    if not current:
        return lambda meta: False
    return lambda meta: (
        "osp_doc" in meta and current.get(str(meta["osp_doc"])) != str(meta.get("osp_rev"))
    )
