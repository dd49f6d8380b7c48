"""The dense leg's planner: exact search over an in-memory copy, or HNSW with over-fetch.

Copies. A layer's ids, vectors, documents and metadata are held in memory
(``mirror.LayerMirror``, blocked by access level): small layers (fewer than
``exact_search_below`` chunks) always, big ones too while this process's mirrored chunks stay
within ``mirror_max_chunks`` (loaded in the background; Chroma answers meanwhile).

Planner (``plan_exact``), like the cardinality-based planners of mature vector databases: the
rows the effective filter can admit are counted from the copy's access-level blocks (the
principal's clearance is a conjunct of every filter); few enough → exact search over just
those blocks (recall 1.0, no Chroma call, also not for the lexical leg's candidates); many →
Chroma's HNSW: unfiltered for an unfiltered query, else an unfiltered query for
``filter_overfetch`` × the wanted depth filtered here, with Chroma's filtered query only when
fewer than the depth pass. ``where`` is evaluated with ``where_eval`` (Chroma's semantics) while
walking candidates in distance order, so an exact answer equals Chroma's filtered answer.

Freshness. A copy is served only while ``layer_fingerprint`` is unchanged: the lexical index's
per-layer counter (bumped in every write's transaction, shared by every process on the
machine), the layer's generation (epoch, sequence) after catching up with the write log
(server mode: other machines), and a local counter bumped by this process's write paths
before they write (``invalidate``). When it changed, the copy catches up by id: the lexical
transaction journals the ids each write touched (``LexicalIndex.changes_since``) and
``invalidate`` records this process's own, and just those are re-read from Chroma. A journal
that cannot tell (a clear, a restore, more than ``CHANGES_KEPT`` writes behind) or a change of
most of the layer reloads the copy instead. Positions are read *before* Chroma is, so a write
racing a load or refresh is re-read next time. An embedded reader's Chroma does not see vectors
another process added after it loaded ("Error finding id"): the copy is dropped and Chroma
answers, as fresh as this process can be.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from osprag.errors import StoreError
from osprag.search.mirror import LayerMirror, select_rows
from osprag.search.where_eval import compile_where

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase
    from osprag.store import Collection

log = logging.getLogger(__name__)
Predicate = Callable[[Mapping[str, Any]], bool]
DocPredicate = Callable[[str | None], bool]
PAGE = 5000


_BLAS: Any = None


def one_blas_thread() -> Any:
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
    mirror: LayerMirror | None
    # Current-revision pointers read while this copy is valid (None = no pointer): they
    # change only with a write, which changes the fingerprint and replaces this state.
    revisions: dict[str, str | None] = field(default_factory=dict)


_RESET = None  # a dirty entry meaning: this process wrote without saying which ids


@dataclass
class _KbState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: dict[str, int] = field(default_factory=dict)
    dirty: dict[str, set[str] | None] = field(default_factory=dict)
    layers: dict[str, _LayerState] = field(default_factory=dict)
    loading: dict[str, threading.Thread] = field(default_factory=dict)
    refreshing: dict[str, threading.Lock] = field(default_factory=dict)


_STATES: weakref.WeakKeyDictionary[KnowledgeBase, _KbState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _kb_state(kb: KnowledgeBase) -> _KbState:
    with _STATES_LOCK:
        state = _STATES.get(kb)
        if state is None:
            state = _STATES[kb] = _KbState()
        return state


def invalidate(kb: KnowledgeBase, layer: str, ids: Sequence[str] | None = None) -> None:
    """A write of this process to ``layer`` (of ``ids``; ``None``: unknown) is about to happen:
    never serve the old copy. The ids are re-read at the next query even if the write's
    lexical half (which journals them) fails."""
    state = _kb_state(kb)
    with state.lock:
        state.local[layer] = state.local.get(layer, 0) + 1
        if ids is None:
            state.dirty[layer] = _RESET
        else:
            dirty = state.dirty.get(layer, set())
            if dirty is not _RESET:
                state.dirty[layer] = dirty | set(ids)


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


_SCOPE = threading.local()


@contextlib.contextmanager
def query_scope() -> Iterator[None]:
    """Within one query each layer's state is looked up once: its legs and the fetch of the
    lexical candidates see the same copy, and the ~6 fingerprint reads (SQLite) a query made
    become one per layer."""
    outer = getattr(_SCOPE, "seen", None)
    _SCOPE.seen = {} if outer is None else outer
    try:
        yield
    finally:
        _SCOPE.seen = outer


def _layer(kb: KnowledgeBase, name: str, col: Collection) -> _LayerState | None:
    seen: dict[tuple[int, str, str], _LayerState | None] | None = getattr(_SCOPE, "seen", None)
    key = (id(kb), name, str(col.id))
    if seen is not None and key in seen:
        return seen[key]
    layer = _current_layer(kb, name, col)
    if seen is not None:
        seen[key] = layer
    return layer


def _current_layer(kb: KnowledgeBase, name: str, col: Collection) -> _LayerState | None:
    """The layer's copy, brought up to date by id when possible, else (re)loaded.

    Small layers load at once; a layer of ``exact_search_below`` chunks or more loads in a
    background thread (tens of seconds at 100k) while its queries go to Chroma, and only when
    the mirrored chunks of this process stay within ``mirror_max_chunks``.
    """
    fingerprint = layer_fingerprint(kb, name)
    if fingerprint is None:
        return None
    state = _kb_state(kb)
    with state.lock:
        cached = state.layers.get(name)
        guard = state.refreshing.setdefault(name, threading.Lock())
    if cached is not None and cached.collection_id == col.id:
        if cached.fingerprint == fingerprint:
            return cached
        if cached.mirror is not None:
            with guard:
                caught = _catch_up(kb, name, col, cached, fingerprint)
            if caught is not None:
                return caught
    count = col.count()
    big = count >= kb.settings.exact_search_below
    fresh = _LayerState(fingerprint, col.id, count, None if big else _load(kb, name, col))
    with state.lock:
        state.layers[name] = fresh
    if big and _fits(kb, state, name, count):
        _load_in_background(kb, state, name, col)  # replaces the entry when loaded
    return fresh


def _catch_up(
    kb: KnowledgeBase, name: str, col: Collection, cached: _LayerState, fingerprint: Hashable
) -> _LayerState | None:
    """Re-read from Chroma the ids written since the copy was made; ``None``: reload instead."""
    mirror = cached.mirror
    assert mirror is not None
    state = _kb_state(kb)
    with state.lock:
        dirty = state.dirty.pop(name, set())
    seq, journal = kb.lexical.changes_since(name, mirror.seq)
    if dirty is _RESET or journal is None:
        return None
    ids = journal | (dirty or set())
    if len(ids) > max(1000, len(mirror) // 5):
        return None  # most of the layer changed: a reload costs less
    try:
        mirror.refresh(col, ids, seq)
    except StoreError as exc:
        log.info("layer %s: no in-memory copy (%s); searching through Chroma", name, exc)
        return None
    fresh = _LayerState(fingerprint, col.id, len(mirror), mirror)
    with state.lock:
        state.layers[name] = fresh
    return fresh


def _load(kb: KnowledgeBase, name: str, col: Collection) -> LayerMirror | None:
    """A full copy; the journal position is read first, so a racing write is re-read later."""
    seq = kb.lexical.generation(name)
    state = _kb_state(kb)
    with state.lock:
        state.dirty.pop(name, None)
    try:
        return LayerMirror.load(col, kb._space(col), seq)
    except StoreError as exc:
        # An embedded reader's Chroma does not see vectors another process added since it
        # loaded the index ("Error finding id"); its own HNSW query omits them too, so
        # answering through Chroma is as fresh as this process can be.
        log.info("layer %s: no in-memory copy (%s); searching through Chroma", name, exc)
        return None


def _fits(kb: KnowledgeBase, state: _KbState, name: str, count: int) -> bool:
    budget = kb.settings.mirror_max_chunks
    with state.lock:
        if name in state.loading:
            return False
        held = sum(
            len(s.mirror)
            for layer, s in state.layers.items()
            if layer != name and s.mirror is not None and s.count >= kb.settings.exact_search_below
        )
    return held + count <= budget


def _load_in_background(kb: KnowledgeBase, state: _KbState, name: str, col: Collection) -> None:
    fingerprint = layer_fingerprint(kb, name)

    def run() -> None:
        try:
            mirror = _load(kb, name, col)
            if mirror is not None:
                with state.lock:
                    state.layers[name] = _LayerState(fingerprint, col.id, len(mirror), mirror)
        except Exception as exc:  # a closed knowledge base, a vanished collection
            log.info("layer %s: background copy failed (%s)", name, exc)
        finally:
            with state.lock:
                state.loading.pop(name, None)

    thread = threading.Thread(target=run, name=f"osp-mirror-{name}", daemon=True)
    with state.lock:
        state.loading[name] = thread
    thread.start()


def wait_for_copies(kb: KnowledgeBase, timeout: float | None = None) -> None:
    """Block until background copies started by this knowledge base are loaded (tests, bench)."""
    state = _kb_state(kb)
    with state.lock:
        threads = list(state.loading.values())
    for thread in threads:
        thread.join(timeout)


def snapshot_for(kb: KnowledgeBase, name: str, col: Collection) -> LayerMirror | None:
    """The layer's in-memory copy when one is held and provably fresh."""
    layer = _layer(kb, name, col)
    return layer.mirror if layer is not None else None


def memory(kb: KnowledgeBase) -> dict[str, int]:
    """Mirrored chunks and their vector bytes, per layer (what ``mirror_max_chunks`` bounds)."""
    state = _kb_state(kb)
    with state.lock:
        held = {n: s.mirror for n, s in state.layers.items() if s.mirror is not None}
    out: dict[str, int] = {}
    for name, mirror in held.items():
        out[f"{name}.chunks"] = len(mirror)
        out[f"{name}.vector_bytes"] = mirror.nbytes()
    return out


def plan_exact(
    kb: KnowledgeBase,
    name: str,
    col: Collection,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
) -> tuple[LayerMirror, list[Hashable]] | None:
    """The planner: search ``name`` exactly in memory, and over which access-level blocks?

    Exact when a fresh copy is held, ``where_document`` can run in Python, and the rows the
    effective filter can admit (whole blocks, by its access-level conjuncts) are fewer than
    the row budget: ``exact_search_below`` for an unfiltered query (the alternative is one
    unfiltered HNSW query) and ``exact_filtered_below`` for a filtered one (the alternative is
    over-fetch with a filtered fallback, several times dearer). Otherwise ``None``: HNSW.
    """
    if not supports_document_filter(where_document):
        return None
    mirror = snapshot_for(kb, name, col)
    if mirror is None:
        return None
    groups = mirror.admitted(where)
    s = kb.settings
    budget = (
        s.exact_search_below if where is None else max(s.exact_search_below, s.exact_filtered_below)
    )
    if len(mirror) < s.exact_search_below or mirror.rows(groups) < budget:
        return mirror, groups
    return None


def all_in_memory(
    kb: KnowledgeBase,
    layers: Sequence[tuple[str, Collection]],
    where_document: Mapping[str, Any] | None,
    where: Mapping[str, Any] | None = None,
) -> bool:
    """True when every layer's dense leg runs in memory (no Chroma call to overlap)."""
    return all(plan_exact(kb, name, col, where, where_document) is not None for name, col in layers)


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
    exact = plan_exact(kb, name, col, where, where_document)
    exact_doc = supports_document_filter(where_document)
    if exact is not None:
        mirror, groups = exact
        predicate = compile_where(where) if where is not None else None
        return mirror.query(vectors, depth, predicate, document_predicate(where_document), groups)
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
    rows = zip(res["ids"], res["documents"], res["metadatas"], strict=True)
    return select_rows(rows, predicate, document)


def stale_filter(
    kb: KnowledgeBase, metas_by_layer: Mapping[str, Sequence[Mapping[str, Any]]]
) -> Callable[[Mapping[str, Any]], bool]:
    """True for chunks of a document version that is not current (atomic replacement).

    Reading the pointers cost a Chroma round trip per query (in a profile of lexical queries on
    the sample corpus, half their time). A layer served from memory keeps the pointers it has
    read with its copy: both belong to the same fingerprint, so the reader sees one consistent
    state of the layer; layers searched through Chroma read them live, as before.
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
        if layer is None or layer.mirror is None:
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
    return kb.stale_predicate(current)
