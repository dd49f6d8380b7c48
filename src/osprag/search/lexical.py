"""A persistent BM25 index over the chunks of every layer: the lexical leg of hybrid retrieval.

Chroma's local mode has no BM25, and bm25s rebuilds its matrix on every change, so osprag keeps
its own index, updated with every write. SQLite holds one row per chunk (its term ids and term
frequencies as packed arrays, its metadata as JSON); a write is one transaction, WAL lets readers
go on meanwhile, and a process rebuilds the in-memory postings (``postings.py``) from those
rows at its first query (seconds per 100k chunks). Until then it holds only the vocabulary: a
process that only writes (an import, a restore, ``osp reindex --lexical``, an ingest) streams
its rows into the file in constant memory instead of building postings it never searches. All
layers share one set of statistics, so an IDF, and therefore a score, means the same in every
layer.

FTS5 was measured and not taken (docs/lexical.md): its ``bm25()`` fixes k1=1.2 and b=0.75, it
cannot weight a query term per document language, and Chroma's ``where`` semantics (which
``where_eval`` reproduces exactly) would have to be re-expressed in SQL.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from osprag.errors import (
    ConfigError,
    DuplicateId,
    InvalidInput,
    InvalidMetadata,
    NotWritable,
    StoreError,
)
from osprag.generations import open_shared_sqlite
from osprag.search.analysis import LANGUAGES, Analyzer, QueryTerms
from osprag.search.postings import Document, IntArray, Key, MemoryIndex
from osprag.search.where_eval import compile_where

T = TypeVar("T")
SCHEMA_VERSION = 1
K1 = 1.2
"""Robertson's default; the dev-set grid (docs/lexical.md) found nothing clearly better."""
B = 0.75
DOC_WEIGHT = 0.5
"""Weight of a chunk's document section in its BM25 score; chosen by
bench/doc_evidence_study.py (docs/retrieval.md). The setting ``lexical_doc_weight`` overrides
it."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    layer TEXT NOT NULL,
    id TEXT NOT NULL,
    language TEXT NOT NULL,
    length INTEGER NOT NULL,
    term_ids BLOB NOT NULL,
    tfs BLOB NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (layer, id)
);
CREATE TABLE IF NOT EXISTS generations (layer TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    layer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ids TEXT,
    PRIMARY KEY (layer, seq)
);
"""
CHANGES_KEPT = 1000
"""Writes per layer whose ids stay in the ``changes`` journal: a copy derived from a layer
(search/mirror.py) that is at most this many writes behind catches up by id, not by reload."""


@dataclass(frozen=True)
class LexicalHit:
    id: str
    layer: str
    score: float
    rank: int


class LexicalIndex:
    """BM25 over chunks of all layers; thread-safe, one writer process at a time.

    Args:
        path: the SQLite file (created if missing); ``None`` keeps everything in memory.
        analyzer: must match the one the file was built with (its identity is stored).
        k1, b: BM25 parameters; they act at query time, so changing them needs no rebuild.
        doc_weight: weight of the chunk's document section (its chunks of one ingested
            document version, ``document_key``) in a chunk's score; also query-time only.

    Raises:
        ConfigError: the file was built by another schema version or analyzer.
        NotWritable: the file cannot be opened or created.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        analyzer: Analyzer | None = None,
        k1: float = K1,
        b: float = B,
        doc_weight: float = DOC_WEIGHT,
    ) -> None:
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if not 0.0 <= doc_weight <= 1.0:
            raise ConfigError(f"the document weight must be within [0, 1], got {doc_weight}")
        self.analyzer = analyzer or Analyzer()
        self.path = path
        self.k1 = k1
        self.b = b
        self._doc_weight = doc_weight
        self._lock = threading.RLock()
        self._closed = False
        # Loaded on demand: ``_memory`` at the first read (None again after a clear or a failed
        # in-memory update), ``_vocab`` at the first write; ``_data_version`` is the file's
        # version both reflect (another connection's commit changes it).
        self._memory: MemoryIndex | None = None
        self._vocab: dict[str, int] | None = None
        self._data_version = -1
        try:
            self._db = open_shared_sqlite(path)
            self._init_schema()
        except sqlite3.Error as exc:
            raise NotWritable(f"cannot open lexical index {path}: {exc}") from None

    # -- public API ---------------------------------------------------------------------------

    def upsert(
        self,
        layer: str,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add or replace chunks of one layer; the statistics of every layer change with it."""
        _check_layer(layer)
        ids = list(ids)
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in ids]
        if not len(ids) == len(texts) == len(metas):
            raise InvalidInput(
                f"upsert needs as many texts and metadatas as ids: "
                f"{len(ids)} ids, {len(texts)} texts, {len(metas)} metadatas"
            )
        _check_ids(ids)
        for chunk_id, meta in zip(ids, metas, strict=True):
            _check_metadata(chunk_id, meta)
        analysed = [self._analyse(text, meta) for text, meta in zip(texts, metas, strict=True)]
        with self._lock:
            vocab = self._begin_write()
            memory = self._memory
            try:
                vocab_new: dict[str, int] = {}
                docs: list[Document] = []
                rows = []
                for chunk_id, meta, (language, counts, length) in zip(
                    ids, metas, analysed, strict=True
                ):
                    term_ids = _term_ids(vocab, counts, vocab_new)
                    tfs = np.fromiter(counts.values(), np.int64, len(counts))
                    tf_blob = np.minimum(tfs, 65535).astype(np.uint16).tobytes()
                    if memory is not None:
                        code = LANGUAGES.index(language)
                        docs.append(
                            Document(
                                (layer, chunk_id),
                                code,
                                length,
                                term_ids,
                                tfs,
                                meta,
                                document_key(layer, meta),
                            )
                        )
                    meta_json = json.dumps(meta, ensure_ascii=False, allow_nan=False)
                    rows.append(
                        (layer, chunk_id, language, length, term_ids.tobytes(), tf_blob, meta_json)
                    )
                replaced = self._stored_terms(layer, ids) if memory is not None else {}
                self._db.executemany(
                    "INSERT INTO terms (id, term) VALUES (?, ?)",
                    [(tid, term) for term, tid in vocab_new.items()],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
                self._bump(layer, ids)
                self._commit()
            except BaseException:
                self._rollback()
                for term in vocab_new:
                    del vocab[term]
                raise
            if memory is not None:
                self._apply(lambda: self._apply_upsert(memory, replaced, docs))

    def delete(self, layer: str, ids: Sequence[str]) -> int:
        """Remove chunks; unknown ids are ignored. Returns how many were removed."""
        _check_layer(layer)
        with self._lock:
            self._begin_write()
            memory = self._memory
            try:
                if memory is not None:
                    removed = self._stored_terms(layer, [str(i) for i in ids])
                    keys = list(removed)
                else:
                    keys = [(layer, str(i)) for i in dict.fromkeys(ids)]
                cursor = self._db.executemany("DELETE FROM chunks WHERE layer = ? AND id = ?", keys)
                self._bump(layer, [str(i) for i in ids])
                self._commit()
            except BaseException:
                self._rollback()
                raise
            if memory is None:
                return max(cursor.rowcount, 0)
            return self._apply(lambda: memory.remove(removed))

    def clear(self, layer: str | None = None) -> None:
        """Remove every chunk of ``layer``, or everything (vocabulary included) for ``None``."""
        with self._lock:
            self._begin_write()
            try:
                if layer is None:
                    self._db.execute("DELETE FROM chunks")
                    self._db.execute("DELETE FROM terms")
                    self._db.execute("UPDATE generations SET seq = seq + 1")
                    self._db.execute(
                        "INSERT OR REPLACE INTO changes SELECT layer, seq, NULL FROM generations"
                    )
                else:
                    self._db.execute("DELETE FROM chunks WHERE layer = ?", (layer,))
                    self._bump(layer, None)
                self._commit()
            except BaseException:
                self._rollback()
                raise
            # reloaded by the next read or write, so a clear before a rebuild holds nothing
            self._memory = None
            self._vocab = None

    @property
    def doc_weight(self) -> float:
        return self._doc_weight

    @doc_weight.setter
    def doc_weight(self, value: float) -> None:
        """Query-time, like k1 and b: a study can sweep it without rebuilding."""
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"the document weight must be within [0, 1], got {value}")
        with self._lock:
            self._doc_weight = value
            if self._memory is not None:
                self._memory.doc_weight = value

    def generation(self, layer: str) -> int:
        """Bumped in the transaction of every write to ``layer``, by any process sharing the
        file: a cheap test whether copies derived from the layer are still current."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT seq FROM generations WHERE layer = ?", (layer,)
            ).fetchone()
            return int(row[0]) if row else 0

    def changes_since(self, layer: str, seq: int) -> tuple[int, set[str] | None]:
        """The layer's generation now, and the ids written since generation ``seq``: ``None``
        when the journal cannot tell (a clear, or more than ``CHANGES_KEPT`` writes ago)."""
        with self._lock:
            self._check_open()
            row = self._db.execute(
                "SELECT seq FROM generations WHERE layer = ?", (layer,)
            ).fetchone()
            now = int(row[0]) if row else 0
            if now == seq:
                return now, set()
            if now < seq:
                return now, None
            rows = self._db.execute(
                "SELECT ids FROM changes WHERE layer = ? AND seq > ? AND seq <= ?",
                (layer, seq, now),
            ).fetchall()
        if len(rows) != now - seq or any(r[0] is None for r in rows):
            return now, None
        ids: set[str] = set()
        for (text,) in rows:
            ids.update(json.loads(text))
        return now, ids

    def count(self, layer: str | None = None) -> int:
        with self._lock:
            return self._sync().count(layer)

    @property
    def loaded(self) -> bool:
        """Whether this process holds the in-memory postings (a read loads them)."""
        return self._memory is not None

    def search(
        self,
        query: str,
        *,
        layers: Sequence[str] | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        expansions: Mapping[str, float] | None = None,
    ) -> list[LexicalHit]:
        """The k best chunks for ``query`` in ``layers`` (all when ``None``) that pass ``where``.

        ``where`` has Chroma's semantics and is applied before the top k are taken. Chunks that
        share no term with the query are never returned, so fewer than k hits is possible.
        ``expansions`` (text → weight, e.g. glossary synonyms) add each text's terms, together
        weighing that fraction of one query term; a term the query has itself keeps its weight.
        """
        if k < 1:
            raise InvalidInput(f"k must be at least 1, got {k}")
        predicate = compile_where(where) if where is not None else None
        terms = self.analyzer.query(query)
        if expansions:
            terms = _expand(self.analyzer, terms, expansions)
        with self._lock:
            memory = self._sync()
            vocab = self._vocab
            assert vocab is not None
            weights: dict[int, list[float]] = {}
            for lang_index, lang in enumerate(LANGUAGES):
                for term, weight in terms.by_language.get(lang, {}).items():
                    tid = vocab.get(term)
                    if tid is not None:
                        weights.setdefault(tid, [0.0] * len(LANGUAGES))[lang_index] = weight
            found = memory.search(weights, k, layers=layers, predicate=predicate)
            entries = memory.entries
            hits = []
            for rank, (slot, score) in enumerate(found, start=1):
                entry = entries[slot]
                assert entry is not None
                hits.append(LexicalHit(entry.key[1], entry.key[0], score, rank))
            return hits

    def metadata_values(
        self, layers: Sequence[str], keys: Sequence[str]
    ) -> dict[str, dict[Any, int]]:
        """Per key, each distinct value in ``layers`` → the lowest access level carrying it.

        One pass over the chunks in memory (tens of ms per 100k): callers cache it per
        generation.
        """
        wanted = set(layers)
        out: dict[str, dict[Any, int]] = {key: {} for key in keys}
        with self._lock:
            for entry in self._sync().entries:
                if entry is None or entry.key[0] not in wanted:
                    continue
                meta = entry.metadata
                level = meta.get("access_level", 4)
                level = level if isinstance(level, int) else 4
                for key in keys:
                    value = meta.get(key)
                    if value is not None:
                        seen = out[key]
                        if seen.get(value, 5) > level:
                            seen[value] = level
        return out

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> LexicalIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _analyse(self, text: str, meta: Mapping[str, Any]) -> tuple[str, Counter[str], int]:
        if not isinstance(text, str):
            raise InvalidInput(f"texts must be strings, got {type(text).__name__}")
        given = meta.get("language")
        lang = self.analyzer.document_language(text, given if isinstance(given, str) else None)
        terms, length = self.analyzer.analyse_document(text, lang)
        return lang, Counter(terms), length

    def _init_schema(self) -> None:
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise ConfigError(
                f"lexical index {self.path} has schema version {row[0]}, "
                f"this osprag reads version {SCHEMA_VERSION}",
                hint="delete the file and rebuild the lexical index",
            )
        identity = self.analyzer.identity()
        stored = self._db.execute("SELECT value FROM settings WHERE key = 'analyzer'").fetchone()
        if stored is not None and stored[0] != identity:
            if self._db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is not None:
                raise ConfigError(
                    f"lexical index {self.path} was built with analyzer {stored[0]!r}, "
                    f"not {identity!r}",
                    hint="clear the index and re-add the chunks, or open it with that analyzer",
                )
        self._db.execute("INSERT OR REPLACE INTO settings VALUES ('analyzer', ?)", (identity,))

    def _load(self) -> MemoryIndex:
        """Rebuild the in-memory index from the file (at the first read, and after another
        process wrote)."""
        self._check_open()
        self._memory = None  # freed before its successor is built
        snapshot = not self._db.in_transaction  # one read snapshot: vocabulary and rows agree
        if snapshot:
            self._db.execute("BEGIN")
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            self._vocab = dict(self._db.execute("SELECT term, id FROM terms"))
            memory = self._read_memory()
        finally:
            if snapshot and self._db.in_transaction:
                self._db.execute("COMMIT")
        self._memory = memory
        self._data_version = version
        return memory

    def _read_memory(self) -> MemoryIndex:
        memory = MemoryIndex(self.k1, self.b, self._doc_weight)
        cursor = self._db.execute(
            "SELECT layer, id, language, length, term_ids, tfs, metadata FROM chunks"
        )
        while rows := cursor.fetchmany(50_000):
            # one json.loads for the batch: per-call overhead dominates small objects
            metas = json.loads("[" + ",".join(row[6] for row in rows) + "]")
            memory.add(
                [
                    Document(
                        (layer, chunk_id),
                        LANGUAGES.index(language) if language in LANGUAGES else 0,
                        length,
                        np.frombuffer(term_blob, np.int32),
                        np.frombuffer(tf_blob, np.uint16),
                        meta,
                        document_key(layer, meta),
                    )
                    for (layer, chunk_id, language, length, term_blob, tf_blob, _), meta in zip(
                        rows, metas, strict=True
                    )
                ]
            )
        memory.flush()
        return memory

    def _changed(self) -> bool:
        """Whether another connection committed since ``_data_version`` was taken."""
        return bool(self._db.execute("PRAGMA data_version").fetchone()[0] != self._data_version)

    def _sync(self) -> MemoryIndex:
        """The in-memory index, (re)loaded when missing or another connection committed."""
        self._check_open()
        if self._memory is None or self._changed():
            return self._load()
        return self._memory

    def _begin_write(self) -> dict[str, int]:
        """Open the write transaction; returns the current vocabulary. A loaded in-memory index
        is brought up to date (it is updated with the write); otherwise only the vocabulary is
        read, so a write never makes a process load postings it does not search."""
        self._check_open()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise NotWritable(f"lexical index {self.path} is not writable: {exc}") from None
        try:
            if self._memory is not None:
                self._sync()
            elif self._vocab is None or self._changed():
                self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
                self._vocab = dict(self._db.execute("SELECT term, id FROM terms"))
        except BaseException:
            self._vocab = None
            self._rollback()
            raise
        assert self._vocab is not None
        return self._vocab

    def _bump(self, layer: str, ids: Sequence[str] | None) -> None:
        """Next generation of ``layer``, journaled with the ids it touched (``None``: all)."""
        (seq,) = self._db.execute(
            "INSERT INTO generations VALUES (?, 1) "
            "ON CONFLICT(layer) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (layer,),
        ).fetchone()
        self._db.execute(
            "INSERT OR REPLACE INTO changes VALUES (?, ?, ?)",
            (layer, seq, None if ids is None else json.dumps(list(ids), ensure_ascii=False)),
        )
        self._db.execute(
            "DELETE FROM changes WHERE layer = ? AND seq <= ?", (layer, seq - CHANGES_KEPT)
        )

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"lexical index {self.path}: commit failed: {exc}") from None

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _apply(self, change: Callable[[], T]) -> T:
        """Apply a committed change in memory; if that fails, reload from the file next time."""
        try:
            return change()
        except BaseException:
            self._memory = None
            raise

    @staticmethod
    def _apply_upsert(
        memory: MemoryIndex, replaced: dict[Key, IntArray], docs: list[Document]
    ) -> None:
        memory.remove(replaced)
        memory.add(docs)

    def _stored_terms(self, layer: str, ids: Sequence[str]) -> dict[Key, IntArray]:
        """Term ids of the stored chunks among ``ids``: what their removal takes from the df."""
        assert self._memory is not None
        slot_of = self._memory.slot_of
        out: dict[Key, IntArray] = {}
        for chunk_id in ids:
            if (layer, chunk_id) in slot_of:
                row = self._db.execute(
                    "SELECT term_ids FROM chunks WHERE layer = ? AND id = ?", (layer, chunk_id)
                ).fetchone()
                out[(layer, chunk_id)] = np.frombuffer(row[0], np.int32)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the lexical index is closed")


def _term_ids(vocab: dict[str, int], counts: Counter[str], vocab_new: dict[str, int]) -> IntArray:
    """Ids for a chunk's terms. New terms enter the vocabulary at once and are listed in
    ``vocab_new``, so a rolled-back write can take them out again."""
    for term in [t for t in counts if t not in vocab]:
        vocab[term] = vocab_new[term] = len(vocab)
    return np.fromiter(map(vocab.__getitem__, counts), np.int32, len(counts))


def document_key(layer: str, meta: Mapping[str, Any]) -> str | None:
    """The unit of text a chunk's document evidence comes from: its section (heading path) of
    one ingested document version (``osp_doc`` at ``osp_rev``).

    A paragraph-sized document under one heading is one unit; a long manual is several, so
    query terms scattered over many pages do not add up to evidence for each of its chunks.
    Records written with ``add``/``upsert`` carry no ``osp_doc`` and stay their own unit;
    chunks of an old and a new revision never mix, so a replacement in progress cannot double
    a unit's term frequencies."""
    doc = meta.get("osp_doc")
    if doc is None:
        return None
    return f"{layer}\x00{doc}\x00{meta.get('osp_rev', '')}\x00{meta.get('section', '')}"


def _expand(analyzer: Analyzer, terms: QueryTerms, expansions: Mapping[str, float]) -> QueryTerms:
    merged = {lang: dict(weights) for lang, weights in terms.by_language.items()}
    for text, factor in expansions.items():
        for lang, weights in analyzer.query(text).by_language.items():
            base = merged.setdefault(lang, {})
            total = sum(weights.values()) or 1.0  # an expansion weighs ``factor`` in all
            for term, weight in weights.items():
                if term not in terms.by_language.get(lang, {}):
                    base[term] = max(base.get(term, 0.0), factor * weight / total)
    return QueryTerms(merged)


def _check_layer(layer: str) -> None:
    if not isinstance(layer, str) or not layer:
        raise InvalidInput(f"layer must be a non-empty string, got {layer!r}")


def _check_ids(ids: list[str]) -> None:
    for chunk_id in ids:
        if not isinstance(chunk_id, str) or not chunk_id:
            raise InvalidInput(f"ids must be non-empty strings, got {chunk_id!r}")
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise DuplicateId(f"ids repeated in one upsert: {', '.join(repeated[:5])}")


def _check_metadata(chunk_id: str, meta: dict[str, Any]) -> None:
    for key, value in meta.items():
        if not isinstance(key, str):
            raise InvalidMetadata(f"{chunk_id}: metadata keys are strings, got {key!r}")
        if not isinstance(value, str | int | float):
            raise InvalidMetadata(
                f"{chunk_id}: metadata {key!r} must be a str, int, float or bool, "
                f"got {type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMetadata(f"{chunk_id}: metadata {key!r} is not a finite number")
