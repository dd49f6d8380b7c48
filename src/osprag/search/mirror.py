"""A layer's records in memory, grouped by access level, updated by id: exact search at scale.

Why grouped. Every query of a principal below full clearance carries ``access_level <= c``.
Rows are kept in one block per distinct ``access_level`` value, so the rows that clause can
admit are whole blocks: the exact dense leg multiplies only those (an L1 principal's 35 % of a
100k layer costs what a 35k layer costs), and the planner (``snapshot.dense_query``) knows
the admitted row count before it chooses between exact search and HNSW. Which blocks can pass
is decided by evaluating, per block, each top-level conjunct of the filter that reads only
``access_level`` on that block's value (``where_eval``, Chroma's semantics), so the choice is
exact for any such conjunct, not only the clearance clause; the full filter is still evaluated
per row while walking candidates, so a block choice can only ever narrow the work.

Why by id. Reloading 100k vectors from Chroma takes 10–20 s. A write journals the ids
it touched in the lexical index's transaction (``LexicalIndex.changes_since``); the mirror
re-reads just those ids from Chroma (present → replaced, absent → removed). Rows are appended
to their block (capacity grows ×1.5) and removed rows are masked until a quarter of a block is
dead, then the block is rewritten. A lock per mirror serialises queries with updates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from osprag.search.where_eval import compile_where

if TYPE_CHECKING:
    from osprag.store import Collection

Predicate = Callable[[Mapping[str, Any]], bool]
DocPredicate = Callable[[str | None], bool]
GroupKey = Hashable
PAGE = 5000
LEVEL = "access_level"
_MISSING: GroupKey = ("missing",)


def group_of(meta: Mapping[str, Any]) -> GroupKey:
    """(type, value) of the access level: 1 and 1.0 and "1" behave differently in filters."""
    if LEVEL not in meta:
        return _MISSING
    value = meta[LEVEL]
    return (type(value).__name__, value)


def _representative(key: GroupKey) -> dict[str, Any]:
    return {} if key == _MISSING else {LEVEL: key[1]}  # type: ignore[index]


def _keys(where: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for key, value in where.items():
        if key in ("$and", "$or"):
            for part in value:
                out |= _keys(part)
        else:
            out.add(key)
    return out


def level_conjuncts(where: Mapping[str, Any] | None) -> list[Predicate]:
    """Predicates of the top-level conjuncts of ``where`` that read ``access_level`` only."""
    if where is None:
        return []
    parts = list(where["$and"]) if set(where) == {"$and"} else [where]
    return [compile_where(p) for p in parts if _keys(p) == {LEVEL}]


@dataclass
class _Block:
    """Rows of one access level: prepared vectors, their slots, and a liveness mask."""

    matrix: npt.NDArray[np.float32]
    sq_norms: npt.NDArray[np.float32]
    slots: npt.NDArray[np.int64]
    alive: npt.NDArray[np.bool_]
    n: int = 0
    dead: int = 0

    @classmethod
    def empty(cls, dim: int, capacity: int) -> _Block:
        return cls(
            np.zeros((capacity, dim), np.float32),
            np.zeros(capacity, np.float32),
            np.zeros(capacity, np.int64),
            np.zeros(capacity, np.bool_),
        )

    @property
    def live(self) -> int:
        return self.n - self.dead

    def append(
        self, rows: npt.NDArray[np.float32], sq: npt.NDArray[np.float32], slots: Sequence[int]
    ) -> npt.NDArray[np.int64]:
        """Positions of the appended rows."""
        m = rows.shape[0]
        if self.n + m > self.matrix.shape[0]:
            cap = max(self.n + m, int(self.matrix.shape[0] * 1.5), 64)
            for name in ("matrix", "sq_norms", "slots", "alive"):
                old = getattr(self, name)
                new = np.zeros((cap, *old.shape[1:]), old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        at = np.arange(self.n, self.n + m, dtype=np.int64)
        self.matrix[at] = rows
        self.sq_norms[at] = sq
        self.slots[at] = np.asarray(slots, np.int64)
        self.alive[at] = True
        self.n += m
        return at

    def trim(self) -> None:
        if self.matrix.shape[0] > self.n:
            self.matrix = self.matrix[: self.n].copy()
            self.sq_norms = self.sq_norms[: self.n].copy()
            self.slots = self.slots[: self.n].copy()
            self.alive = self.alive[: self.n].copy()

    def compact(self) -> dict[int, int]:
        """Drop dead rows; returns slot → new position for the survivors."""
        keep = np.flatnonzero(self.alive[: self.n])
        self.matrix = np.ascontiguousarray(self.matrix[keep])
        self.sq_norms = self.sq_norms[keep].copy()
        self.slots = self.slots[keep].copy()
        self.alive = np.ones(keep.size, np.bool_)
        self.n, self.dead = int(keep.size), 0
        return {int(s): i for i, s in enumerate(self.slots.tolist())}


class LayerMirror:
    """Ids, prepared vectors, documents and metadata of one layer, blocked by access level.

    ``seq`` is the lexical journal position the copy reflects (``LexicalIndex.changes_since``).
    """

    def __init__(self, collection_id: str, space: str, seq: int) -> None:
        self.collection_id = collection_id
        self.space = space
        self.seq = seq
        self.dim = 0
        self.ids: list[str] = []
        self.documents: list[str | None] = []
        self.metadatas: list[dict[str, Any]] = []
        self.slot_of: dict[str, int] = {}
        self._where: dict[int, tuple[GroupKey, int]] = {}  # slot → (block, position)
        self.blocks: dict[GroupKey, _Block] = {}
        self.lock = threading.RLock()

    # -- building and updating ---------------------------------------------------------------

    @classmethod
    def load(cls, col: Collection, space: str, seq: int) -> LayerMirror:
        """Everything in the collection, read in pages (the slow path: 6–9k rows/s at 100k)."""
        mirror = cls(col.id, space, seq)
        offset = 0
        while True:
            page = col.get(
                limit=PAGE, offset=offset, include=["embeddings", "documents", "metadatas"]
            )
            if not page["ids"]:
                break
            mirror._add(page["ids"], page["embeddings"], page["documents"], page["metadatas"])
            offset += len(page["ids"])
            if len(page["ids"]) < PAGE:
                break
        for block in mirror.blocks.values():
            block.trim()  # growth left up to half a block unused
        return mirror

    @classmethod
    def from_records(
        cls,
        ids: Sequence[str],
        vectors: Any,
        documents: Sequence[str | None],
        metadatas: Sequence[Mapping[str, Any] | None],
        space: str = "cosine",
    ) -> LayerMirror:
        """A copy built from records at hand (benchmarks, tests)."""
        mirror = cls("local", space, 0)
        if len(ids):
            mirror._add(ids, vectors, documents, metadatas)
        return mirror

    def refresh(self, col: Collection, ids: Iterable[str], seq: int) -> None:
        """Bring ``ids`` to the collection's current state (present → replaced, absent → gone)."""
        wanted = sorted(set(ids))
        with self.lock:
            for start in range(0, len(wanted), PAGE):
                part = wanted[start : start + PAGE]
                page = col.get(ids=part, include=["embeddings", "documents", "metadatas"])
                self._remove(part)
                if page["ids"]:
                    self._add(page["ids"], page["embeddings"], page["documents"], page["metadatas"])
            self.seq = seq

    def _add(
        self,
        ids: Sequence[str],
        embeddings: Any,
        documents: Sequence[str | None],
        metadatas: Sequence[Mapping[str, Any] | None],
    ) -> None:
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but vectors of shape {vectors.shape}")
        if not self.dim:
            self.dim = int(vectors.shape[1])
        sq = np.einsum("ij,ij->i", vectors, vectors).astype(np.float32)
        if self.space == "cosine":
            vectors = vectors / np.maximum(np.sqrt(sq), 1e-12)[:, None]
        groups: dict[GroupKey, list[int]] = {}
        for i, (rid, doc, meta) in enumerate(zip(ids, documents, metadatas, strict=True)):
            slot = len(self.ids)
            clean = dict(meta or {})
            self.ids.append(rid)
            self.documents.append(doc)
            self.metadatas.append(clean)
            self.slot_of[rid] = slot
            groups.setdefault(group_of(clean), []).append(i)
        for key, rows in groups.items():
            block = self.blocks.get(key)
            if block is None:
                block = self.blocks[key] = _Block.empty(self.dim, len(rows))
            slots = [self.slot_of[ids[i]] for i in rows]
            positions = block.append(vectors[rows], sq[rows], slots)
            for slot, pos in zip(slots, positions.tolist(), strict=True):
                self._where[slot] = (key, pos)

    def _remove(self, ids: Sequence[str]) -> None:
        touched: set[GroupKey] = set()
        for rid in ids:
            slot = self.slot_of.pop(rid, None)
            if slot is None:
                continue
            key, pos = self._where.pop(slot)
            block = self.blocks[key]
            block.alive[pos] = False
            block.dead += 1
            self.documents[slot] = None
            self.metadatas[slot] = {}
            touched.add(key)
        for key in touched:
            block = self.blocks[key]
            if block.dead > max(256, block.n // 4):
                for slot, pos in block.compact().items():
                    self._where[slot] = (key, pos)

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.slot_of)

    def admitted(self, where: Mapping[str, Any] | None) -> list[GroupKey]:
        """Blocks whose rows can pass ``where`` (decided by its access-level conjuncts)."""
        tests = level_conjuncts(where)
        with self.lock:  # a refresh may add a block meanwhile
            keys = list(self.blocks)
        return [key for key in keys if all(test(_representative(key)) for test in tests)]

    def rows(self, groups: Iterable[GroupKey]) -> int:
        with self.lock:
            return sum(self.blocks[g].live for g in groups if g in self.blocks)

    def query(
        self,
        vectors: Any,
        k: int,
        where: Predicate | None,
        document: DocPredicate | None,
        groups: Sequence[GroupKey] | None = None,
    ) -> dict[str, Any]:
        """Chroma-shaped ``query`` answer: the exact k nearest rows of ``groups`` that pass."""
        q = np.asarray(vectors, dtype=np.float32)
        out: dict[str, Any] = {"ids": [], "distances": [], "documents": [], "metadatas": []}
        with self.lock:
            chosen = [
                self.blocks[g]
                for g in (groups if groups is not None else self.blocks)
                if g in self.blocks and self.blocks[g].live
            ]
            if not chosen:
                for key in out:
                    out[key] = [[] for _ in range(len(q))]
                return out
            dist, slots = self._distances(q, chosen)
            for row in dist:
                cols = _nearest(row, k, where, document, slots, self)
                picked = slots[cols].tolist()
                out["ids"].append([self.ids[s] for s in picked])
                out["distances"].append(row[cols].tolist())
                out["documents"].append([self.documents[s] for s in picked])
                out["metadatas"].append([self.metadatas[s] for s in picked])
        return out

    def distances(self, vectors: Any) -> npt.NDArray[np.float32]:
        """Distances to every live row, columns in load order (tests, tuning)."""
        q = np.asarray(vectors, dtype=np.float32)
        with self.lock:
            blocks = [b for b in self.blocks.values() if b.live]
            if not blocks:
                return np.zeros((len(q), 0), np.float32)
            dist, slots = self._distances(q, blocks)
        return dist[:, np.argsort(slots, kind="stable")]

    def _distances(
        self, q: npt.NDArray[np.float32], blocks: Sequence[_Block]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Chroma's distance (1 − cos, 1 − dot, squared L2) to every live row of ``blocks``."""
        from osprag.search.snapshot import one_blas_thread

        if self.space == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        parts, slot_parts = [], []
        with one_blas_thread():
            for b in blocks:
                live = b.alive[: b.n]
                m = b.matrix[: b.n]
                dots = q @ m.T
                if self.space == "l2":
                    q_sq = np.einsum("ij,ij->i", q, q)[:, None]
                    d = np.maximum(q_sq + b.sq_norms[: b.n] - 2 * dots, 0)
                else:
                    d = np.float32(1.0) - dots
                if b.dead:
                    d, s = d[:, live], b.slots[: b.n][live]
                else:
                    s = b.slots[: b.n]
                parts.append(d)
                slot_parts.append(s)
        dist = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        slots = slot_parts[0] if len(slot_parts) == 1 else np.concatenate(slot_parts)
        return np.asarray(dist, np.float32), slots

    def get(
        self, ids: Sequence[str], where: Predicate | None, document: DocPredicate | None
    ) -> dict[str, Any]:
        """Chroma-shaped ``get`` answer for known ids that pass both filters."""
        with self.lock:
            slots = [(rid, self.slot_of.get(rid)) for rid in ids]
            rows = [
                (rid, self.documents[slot], self.metadatas[slot])
                for rid, slot in slots
                if slot is not None
            ]
        return select_rows(rows, where, document)

    def nbytes(self) -> int:
        """Vector memory (the part that grows with the layer; texts are counted by the caller)."""
        return sum(
            b.matrix.nbytes + b.sq_norms.nbytes + b.slots.nbytes for b in self.blocks.values()
        )


def _nearest(
    row: npt.NDArray[np.float32],
    k: int,
    where: Predicate | None,
    document: DocPredicate | None,
    slots: npt.NDArray[np.int64],
    mirror: LayerMirror,
) -> npt.NDArray[np.intp]:
    """The k nearest columns whose rows pass; ties by column order."""
    n = row.size
    plain = where is None and document is None
    want = min(n, k if plain else max(4 * k, 64))
    head = np.argpartition(row, want - 1)[:want] if want < n else np.arange(n)
    head = head[np.lexsort((head, row[head]))]
    if plain:
        return np.asarray(head[:k], np.intp)
    hits = _walk(head, k, where, document, slots, mirror)
    if len(hits) < k and want < n:
        rest = np.setdiff1d(np.arange(n), head, assume_unique=True)
        rest = rest[np.lexsort((rest, row[rest]))]
        hits += _walk(rest, k - len(hits), where, document, slots, mirror)
    return np.asarray(hits, np.intp)


def _walk(
    order: npt.NDArray[Any],
    k: int,
    where: Predicate | None,
    document: DocPredicate | None,
    slots: npt.NDArray[np.int64],
    mirror: LayerMirror,
) -> list[int]:
    hits: list[int] = []
    metas, docs = mirror.metadatas, mirror.documents
    for col, slot in zip(order.tolist(), slots[order].tolist(), strict=True):
        if where is not None and not where(metas[slot]):
            continue
        if document is not None and not document(docs[slot]):
            continue
        hits.append(col)
        if len(hits) == k:
            break
    return hits


def select_rows(
    rows: Iterable[tuple[str, str | None, Mapping[str, Any] | None]],
    where: Callable[[Mapping[str, Any]], bool] | None,
    document: Callable[[str | None], bool] | None,
) -> dict[str, Any]:
    """(id, document, metadata) rows that pass both filters, as a Chroma ``get`` result."""
    out: dict[str, Any] = {"ids": [], "documents": [], "metadatas": []}
    for rid, doc, meta in rows:
        if where is not None and not where(meta or {}):
            continue
        if document is not None and not document(doc):
            continue
        out["ids"].append(rid)
        out["documents"].append(doc)
        out["metadatas"].append(meta)
    return out
