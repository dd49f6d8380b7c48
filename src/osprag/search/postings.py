"""The in-memory side of the lexical index: postings segments, document arrays, BM25 scoring.

SQLite keeps the durable copy (one row per chunk); this module keeps what a query touches in
numpy arrays, because reading postings rows through sqlite3 costs ~0.5 µs each, 20 ms for one
common term at 100k chunks. Writes append a segment; segments are merged like a log-structured
merge tree (a new segment merges into its predecessor while it is at least half its size), so
a write costs amortised O(log n) per posting and a query visits O(log n) segments. Deleted
chunks stay in their segments, masked, until a merge drops them; once most slots are dead the
survivors are renumbered. Memory: about 6 bytes per posting plus the metadata dicts, ~0.5 GB
at 100k chunks of 110 words (docs/lexical.md).

Document evidence (``doc_weight`` > 0): a chunk whose group (its document section, see
``lexical.document_key``) has two or more live chunks scores
``(1 − w) × its own BM25 + w × the group's BM25``, the group scored as one document: the
concatenation of its chunks, against the average length of all documents (groups plus
ungrouped chunks), with the chunk-level IDF (docs/retrieval.md). The group's term frequencies
are summed from the chunks' postings at query time, so nothing extra is stored and a deletion
is correct as soon as the chunk is masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse  # type: ignore[import-untyped]

Key = tuple[str, str]  # (layer, id)
IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float32]
TfArray = npt.NDArray[np.uint16]


@dataclass(frozen=True)
class Segment:
    """Postings of a batch of chunks, sorted by term id (CSR over the distinct terms)."""

    terms: IntArray
    starts: npt.NDArray[np.int64]
    slots: IntArray
    tfs: TfArray

    @property
    def size(self) -> int:
        return int(self.slots.size)

    @classmethod
    def build(cls, terms: IntArray, slots: IntArray, tfs: TfArray) -> Segment:
        """Group postings by term with scipy's counting-sort transpose: O(n + vocabulary),
        ten times faster than ``argsort`` at 20M postings, which is what a reopen costs."""
        if terms.size == 0:
            return cls(terms, np.zeros(1, np.int64), slots, tfs)
        shape = (int(slots.max()) + 1, int(terms.max()) + 1)
        matrix = sparse.coo_matrix((tfs, (slots, terms)), shape=shape).tocsc()
        counts = np.diff(matrix.indptr)
        present = np.flatnonzero(counts).astype(np.int32)
        starts = np.append(matrix.indptr[present], matrix.indptr[-1]).astype(np.int64)
        return cls(
            present,
            starts,
            matrix.indices.astype(np.int32, copy=False),
            matrix.data.astype(np.uint16, copy=False),
        )

    def triples(self) -> tuple[IntArray, IntArray, TfArray]:
        terms = np.repeat(self.terms, np.diff(self.starts)).astype(np.int32)
        return terms, self.slots, self.tfs


@dataclass(frozen=True)
class Document:
    """A chunk to add: its term ids and frequencies go into a segment, the rest is kept."""

    key: Key
    language: int
    length: int
    terms: IntArray
    tfs: npt.NDArray[Any]
    metadata: Mapping[str, Any]
    group: str | None = None  # the document (version) the chunk belongs to, if known


@dataclass(frozen=True, slots=True)
class Entry:
    """What stays in memory per chunk besides its postings."""

    key: Key
    length: int
    metadata: Mapping[str, Any]
    group: int = -1


@dataclass
class MemoryIndex:
    """Every chunk of every layer in one set of statistics, so IDF is shared across layers."""

    k1: float
    b: float
    doc_weight: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    _pending: list[tuple[IntArray, IntArray, TfArray]] = field(default_factory=list)
    slot_of: dict[Key, int] = field(default_factory=dict)
    entries: list[Entry | None] = field(default_factory=list)
    layer_codes: dict[str, int] = field(default_factory=dict)
    _alive: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    _length: FloatArray = field(default_factory=lambda: np.zeros(0, np.float32))
    _language: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    _layer: npt.NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, np.int16))
    _df: IntArray = field(default_factory=lambda: np.zeros(0, np.int32))
    _total_length: int = 0
    _norm: FloatArray | None = None
    _layer_counts: dict[str, int] = field(default_factory=dict)
    # documents: group code per slot (-1: none), live chunks and summed length per group
    group_codes: dict[str, int] = field(default_factory=dict)
    _group: IntArray = field(default_factory=lambda: np.zeros(0, np.int32))
    _group_chunks: IntArray = field(default_factory=lambda: np.zeros(0, np.int32))
    _group_length: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    _group_language: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    _documents: int = 0  # live documents: groups with a live chunk + chunks without a group
    _multi: int = 0  # groups with two or more live chunks
    _unit: tuple[IntArray, npt.NDArray[np.float64]] | None = None  # see _doc_evidence

    # -- writes -------------------------------------------------------------------------------

    def add(self, documents: Sequence[Document]) -> None:
        """Documents whose keys are not in the index (remove the old version first)."""
        if not documents:
            return
        first = len(self.entries)
        n = first + len(documents)
        self._reserve(n)
        for slot, doc in enumerate(documents, start=first):
            layer = doc.key[0]
            self.slot_of[doc.key] = slot
            group = self._join(doc.group, doc.length, doc.language, +1)
            self.entries.append(Entry(doc.key, doc.length, doc.metadata, group))
            self._group[slot] = group
            self._length[slot] = doc.length
            self._language[slot] = doc.language
            self._layer[slot] = self.layer_codes.setdefault(layer, len(self.layer_codes))
            self._total_length += doc.length
            self._layer_counts[layer] = self._layer_counts.get(layer, 0) + 1
        self._alive[first:n] = True
        sizes = [doc.terms.size for doc in documents]
        terms = np.concatenate([doc.terms for doc in documents]).astype(np.int32, copy=False)
        slots = np.repeat(np.arange(first, n, dtype=np.int32), sizes)
        tfs = np.concatenate([doc.tfs for doc in documents])
        tfs = np.minimum(tfs, 65535).astype(np.uint16, copy=False)
        self._count_terms(terms, +1)
        self._pending.append((terms, slots, tfs))
        self._norm = self._unit = None

    def remove(self, removed: Mapping[Key, IntArray]) -> int:
        """Drop chunks, given the term ids they were added with (the caller's stored copy)."""
        count = 0
        gone: list[IntArray] = []
        for key, terms in removed.items():
            slot = self.slot_of.pop(key, None)
            if slot is None:
                continue
            entry = self.entries[slot]
            assert entry is not None
            self.entries[slot] = None
            self._alive[slot] = False
            self._total_length -= entry.length
            self._layer_counts[key[0]] -= 1
            self._join(entry.group, entry.length, 0, -1)
            gone.append(terms)
            count += 1
        if gone:
            self._count_terms(np.concatenate(gone).astype(np.int32, copy=False), -1)
        if count:
            self._norm = self._unit = None
            if len(self.entries) > 1024 and len(self.entries) > 2 * len(self.slot_of):
                self._compact()
        return count

    def _compact(self) -> None:
        """Renumber the live chunks once most slots are dead, so arrays stay proportional."""
        self.flush()
        n = len(self.entries)
        live = np.flatnonzero(self._alive[:n])
        renumber = np.full(n, -1, np.int32)
        renumber[live] = np.arange(live.size, dtype=np.int32)
        if self.segments:
            merged = self._merge(*self.segments)
            self.segments = [replace(merged, slots=renumber[merged.slots])]
        self.entries = [self.entries[i] for i in live.tolist()]
        self.slot_of = {e.key: i for i, e in enumerate(self.entries) if e is not None}
        self._alive = self._alive[live].copy()
        self._length = self._length[live].copy()
        self._language = self._language[live].copy()
        self._layer = self._layer[live].copy()
        self._group = self._group[live].copy()
        self._norm = self._unit = None

    def _join(self, group: str | int | None, length: int, language: int, sign: int) -> int:
        """A chunk enters (+1) or leaves (-1) its document; returns the group code (-1: none).

        Group codes are never reused, so a document version that comes back gets a new code;
        the arrays grow with the number of versions ever seen by this process (a reopen
        starts afresh)."""
        if group is None or group == -1:
            self._documents += sign
            return -1
        if isinstance(group, str):
            code = self.group_codes.get(group)
            if code is None:
                code = self.group_codes[group] = len(self.group_codes)
                if code >= self._group_chunks.size:
                    size = max(code + 1, 2 * self._group_chunks.size, 256)
                    self._group_chunks = _grow(self._group_chunks, size)
                    self._group_length = _grow(self._group_length, size)
                    self._group_language = _grow(self._group_language, size)
                self._group_language[code] = language
        else:
            code = group
        before = int(self._group_chunks[code])
        after = before + sign
        self._group_chunks[code] = after
        self._group_length[code] += sign * length
        self._documents += (after > 0) - (before > 0)
        self._multi += (after > 1) - (before > 1)
        return code

    def keys(self, layer: str | None = None) -> list[Key]:
        return [k for k in self.slot_of if layer is None or k[0] == layer]

    def count(self, layer: str | None = None) -> int:
        if layer is None:
            return len(self.slot_of)
        return self._layer_counts.get(layer, 0)

    def _count_terms(self, terms: IntArray, sign: int) -> None:
        if terms.size == 0:
            return
        top = int(terms.max()) + 1
        if top > self._df.size:
            grown = np.zeros(max(top, 2 * self._df.size), np.int32)
            grown[: self._df.size] = self._df
            self._df = grown
        counts = np.bincount(terms, minlength=self._df.size).astype(np.int32)
        if sign > 0:
            self._df += counts
        else:
            self._df -= counts

    def _reserve(self, n: int) -> None:
        if n <= self._alive.size:
            return
        size = max(n, 2 * self._alive.size, 1024)
        self._alive = _grow(self._alive, size)
        self._length = _grow(self._length, size)
        self._language = _grow(self._language, size)
        self._layer = _grow(self._layer, size)
        self._group = _grow(self._group, size)

    # -- segments -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Turn pending writes into a segment and merge segments of similar size."""
        if not self._pending:
            return
        terms = np.concatenate([p[0] for p in self._pending])
        slots = np.concatenate([p[1] for p in self._pending])
        tfs = np.concatenate([p[2] for p in self._pending])
        self._pending.clear()
        self.segments.append(Segment.build(terms, slots, tfs))
        while len(self.segments) > 1 and 2 * self.segments[-1].size >= self.segments[-2].size:
            newer = self.segments.pop()
            older = self.segments.pop()
            self.segments.append(self._merge(older, newer))

    def _merge(self, *parts: Segment) -> Segment:
        triples = [p.triples() for p in parts]
        terms = np.concatenate([t[0] for t in triples])
        slots = np.concatenate([t[1] for t in triples])
        tfs = np.concatenate([t[2] for t in triples])
        keep = self._alive[slots]
        return Segment.build(terms[keep], slots[keep], tfs[keep])

    # -- search -------------------------------------------------------------------------------

    def search(
        self,
        weights: Mapping[int, Sequence[float]],
        k: int,
        *,
        layers: Sequence[str] | None = None,
        predicate: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[tuple[int, float]]:
        """(slot, score) of the k best chunks that pass ``layers`` and ``predicate``.

        ``weights`` maps a term id to its query weight per document language. The filter is
        applied while walking candidates in score order, so k hits come back whenever k
        matching chunks contain a query term.
        """
        self.flush()
        n = len(self.entries)
        alive_count = len(self.slot_of)
        if not alive_count or not weights:
            return []
        scores = np.zeros(n, np.float32)
        norm = self._norms(n)
        k1 = self.k1
        documents = self._doc_evidence()
        query_ids = np.fromiter(weights, np.int32, len(weights))
        found = [np.searchsorted(segment.terms, query_ids) for segment in self.segments]
        for i, term_id in enumerate(query_ids.tolist()):
            df = int(self._df[term_id]) if term_id < self._df.size else 0
            if df <= 0:
                continue
            parts = []
            for segment, at_all in zip(self.segments, found, strict=True):
                at = int(at_all[i])
                if at < segment.terms.size and segment.terms[at] == term_id:
                    lo, hi = segment.starts[at], segment.starts[at + 1]
                    parts.append((segment.slots[lo:hi], segment.tfs[lo:hi]))
            if not parts:
                continue
            slots = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            tf16 = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            tfs = tf16.astype(np.float32)
            idf = math.log(1.0 + (alive_count - df + 0.5) / (df + 0.5))
            lang_weights = weights[term_id]
            table = np.asarray(lang_weights, np.float32) * np.float32(idf)
            part = tfs * np.float32(k1 + 1.0) / (tfs + norm[slots])
            if len(set(lang_weights)) == 1:
                part *= np.float32(idf * lang_weights[0])
            else:
                part *= table[self._language[slots]]
            scores[slots] += part
            if documents is not None:
                documents.add_term(slots, tfs, table)
        if documents is not None:
            documents.mix(scores)
        mask = self._alive[:n]
        codes = {self.layer_codes[x] for x in layers or () if x in self.layer_codes}
        if layers is not None and len(codes) < len(self.layer_codes):
            # every layer asked (the usual query): no mask; np.isin over 100k slots is ~1 ms
            layer = self._layer[:n]
            keep = np.zeros(n, np.bool_)
            for code in codes:
                keep |= layer == code
            mask = mask & keep
        candidates = np.flatnonzero((scores > 0) & mask)
        return self._top(candidates, scores, k, predicate)

    def _top(
        self,
        candidates: IntArray | npt.NDArray[np.intp],
        scores: FloatArray,
        k: int,
        predicate: Callable[[Mapping[str, Any]], bool] | None,
    ) -> list[tuple[int, float]]:
        if candidates.size == 0:
            return []
        want = k if predicate is None else max(4 * k, 64)
        if candidates.size > want:
            best = np.argpartition(-scores[candidates], want - 1)[:want]
            head = candidates[best]
        else:
            head = candidates
        head = head[np.lexsort((head, -scores[head]))]
        if predicate is None:
            return [(int(s), float(scores[s])) for s in head[:k]]
        hits = self._walk(head, scores, k, predicate)
        if len(hits) < k and candidates.size > want:
            # the best batch held fewer than k matches: go on through the rest in score order
            rest = np.setdiff1d(candidates, head, assume_unique=True)
            rest = rest[np.lexsort((rest, -scores[rest]))]
            hits += self._walk(rest, scores, k - len(hits), predicate)
        return hits

    def _walk(
        self,
        order: npt.NDArray[Any],
        scores: FloatArray,
        k: int,
        predicate: Callable[[Mapping[str, Any]], bool],
    ) -> list[tuple[int, float]]:
        hits: list[tuple[int, float]] = []
        entries = self.entries
        for slot in order.tolist():
            entry = entries[slot]
            if entry is not None and predicate(entry.metadata):
                hits.append((slot, float(scores[slot])))
                if len(hits) == k:
                    break
        return hits

    def _norms(self, n: int) -> FloatArray:
        if self._norm is None or self._norm.size != n:
            avg = self._total_length / max(len(self.slot_of), 1) or 1.0
            lengths = self._length[:n]
            self._norm = (self.k1 * (1.0 - self.b + self.b * lengths / avg)).astype(np.float32)
        return self._norm

    def _doc_evidence(self) -> _DocScores | None:
        """The query's unit accumulator, or None when no unit has two live chunks (then every
        score is the chunk's own, exactly as without document evidence).

        Cached until the next write: per slot the unit code when the chunk is live and its
        unit has two or more live chunks (else -1), and per unit its BM25 length norm."""
        if self.doc_weight <= 0.0 or self._multi == 0:
            return None
        if self._unit is None:
            n = len(self.entries)
            groups = len(self.group_codes)
            multi = self._group_chunks[:groups] > 1
            slot_unit = self._group[:n].copy()
            slot_unit[~self._alive[:n]] = -1
            has = slot_unit >= 0
            slot_unit[has & ~multi[np.where(has, slot_unit, 0)]] = -1
            avg = self._total_length / max(self._documents, 1) or 1.0
            lengths = self._group_length[:groups]
            self._unit = (slot_unit, self.k1 * (1.0 - self.b + self.b * lengths / avg))
        slot_unit, norm = self._unit
        return _DocScores(self, slot_unit, norm, np.zeros(norm.size, np.float64))


@dataclass
class _DocScores:
    """One query's BM25 over whole units (document sections of two or more live chunks)."""

    index: MemoryIndex
    slot_unit: IntArray  # per slot: its unit, or -1 (dead, no unit, or a one-chunk unit)
    norm: npt.NDArray[np.float64]  # per unit: k1 × (1 − b + b × length / average length)
    scores: npt.NDArray[np.float64]

    def add_term(self, slots: IntArray, tfs: FloatArray, table: FloatArray) -> None:
        """Sum the term's frequencies per unit and add its BM25 contribution."""
        units = self.slot_unit[slots]
        keep = units >= 0
        if not keep.any():
            return
        tf = np.bincount(units[keep], weights=tfs[keep], minlength=self.norm.size)
        present = np.flatnonzero(tf)
        tf = tf[present]
        k1 = self.index.k1
        weight = table[self.index._group_language[present]]
        self.scores[present] += weight * tf * (k1 + 1.0) / (tf + self.norm[present])

    def mix(self, scores: FloatArray) -> None:
        """Chunks that matched and belong to a unit of two or more chunks get the mix."""
        hit = np.flatnonzero(scores > 0)
        units = self.slot_unit[hit]
        keep = units >= 0
        hit, units = hit[keep], units[keep]
        w = self.index.doc_weight
        mixed = (1.0 - w) * scores[hit] + w * self.scores[units]
        scores[hit] = mixed.astype(np.float32)


def _grow(array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    grown = np.zeros(size, array.dtype)
    grown[: array.size] = array
    return grown
