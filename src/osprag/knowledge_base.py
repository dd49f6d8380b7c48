"""``KnowledgeBase``: the one Python API that the CLI, the HTTP server and adapters call.

Every write is validated as a whole before anything is written; every read takes a principal
whose clearance is compiled into the effective filter once; layers are aliases resolved through
the store's registry, so reindex and restore flip a pointer instead of renaming collections.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from .config import Settings, load_settings
from .embed_cache import CachingEmbedder, EmbeddingCache
from .embedding import Embedder, ModelIdentity, create_embedder
from .errors import (
    AccessDenied,
    ConfigError,
    DimensionMismatch,
    DuplicateId,
    EmbeddingMismatch,
    InvalidInput,
    NotFound,
    OspragError,
    StoreError,
)
from .filters import clearance_clause, effective_where, validate_where_document
from .ids import default_id
from .locking import DataDirLock
from .metadata import validate_metadata, validate_update_metadata
from .principal import LOCAL, Principal
from .results import LayerStats, QueryResult, Record, WriteResult
from .store import SCHEMA_VERSION, Collection, IndexConfig, Store

if TYPE_CHECKING:
    from .documents import DocumentInfo
    from .freshness import Freshness
    from .generate.answerer import Answer, AnswerEvent
    from .generations import Generation
    from .ingest.csv_import import CsvImportReport
    from .ingest.sync import IngestReport
    from .ingest.sync import Progress as IngestProgress
    from .search.cache import ResultCache
    from .search.glossary import Glossary
    from .search.lexical import LexicalIndex

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
_INCLUDE = {"documents", "metadatas", "embeddings"}
MAX_RESULTS = 1000


def _as_list(value: str | Sequence[str], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise InvalidInput(f"{what} must not be empty")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput(f"{what}[{i}] must be a non-empty string")
    return items


def _check_include(include: Sequence[str]) -> list[str]:
    bad = [i for i in include if i not in _INCLUDE]
    if bad:
        raise InvalidInput(f"unknown include {bad}", hint=f"choose from {sorted(_INCLUDE)}")
    return list(include)


class KnowledgeBase:
    """A multi-layer knowledge base over one Chroma database."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        embedder: Embedder | None = None,
        read_only: bool = False,
        lock: DataDirLock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.read_only = read_only
        self._lock = lock
        self._embedder = embedder
        self._cache: EmbeddingCache | None = None
        self._cols: dict[str, Collection] = {}
        self._checked: set[str] = set()
        self._lexical: LexicalIndex | None = None
        self._lexical_checked: set[str] = set()
        self._freshness: Freshness | None = None
        self._result_cache: ResultCache | None = None
        self._glossary: Glossary | None = None
        self.warnings: dict[str, list[str]] = {}

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        read_only: bool = False,
    ) -> KnowledgeBase:
        """Connect to the store; in embedded mode a writer takes the data-dir lock first."""
        settings = settings or load_settings()
        lock: DataDirLock | None = None
        if settings.effective_storage == "embedded" and not read_only:
            try:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                from .errors import NotWritable

                raise NotWritable(
                    f"data dir {settings.data_dir} cannot be created: {exc.strerror or exc}",
                    hint="set OSP_DATA_DIR to a writable directory",
                ) from None
            lock = DataDirLock(settings.data_dir)
            lock.acquire(settings.lock_timeout)
        try:
            store = Store(settings)
            store.registry()  # creates it on first use and checks the schema version
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(settings, store, embedder=embedder, read_only=read_only, lock=lock)

    def close(self) -> None:
        if self._freshness is not None:
            self._freshness.close()
            self._freshness = None
        if self._lexical is not None:
            self._lexical.close()
            self._lexical = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self.store.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        """Created on first use so that reads that need no vectors never load a model."""
        if self._embedder is None:
            self._embedder = create_embedder(self.settings)
        if self.settings.embedding_cache and not isinstance(self._embedder, CachingEmbedder):
            if self._cache is None:
                self._cache = EmbeddingCache(
                    self.settings.effective_cache_dir / "embeddings.sqlite"
                )
            self._embedder = CachingEmbedder(self._embedder, self._cache)
        return self._embedder

    def use_embedder(self, embedder: Embedder) -> None:
        """Switch models (after a reindex); cached layer handles are re-checked."""
        self._embedder = embedder
        self._cols.clear()
        self._checked.clear()

    # ----------------------------------------------------------------- layers

    def _layer_metadata(self, layer: str, identity: ModelIdentity) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "osp_schema_version": SCHEMA_VERSION,
            "osp_layer": layer,
            "osp_created": time.time(),
        }
        meta.update(identity.to_metadata())
        return meta

    def _new_collection_name(self, layer: str) -> str:
        base = self.settings.layer(layer).collection_name(layer)
        existing = set(self.store.list_collections())
        if base not in existing:
            return base
        n = 2
        while f"{base}__v{n}" in existing:
            n += 1
        return f"{base}__v{n}"

    def create_layer_collection(self, layer: str, identity: ModelIdentity) -> Collection:
        name = self._new_collection_name(layer)
        return self.store.create_collection(
            name, self._layer_metadata(layer, identity), IndexConfig.from_settings(self.settings)
        )

    def _collection(self, layer: str, *, create: bool, check: bool = True) -> Collection | None:
        """The layer's collection; ``check`` verifies the model identity (once per layer).

        Paths that need no vectors (get, count, delete, a no-op sync) pass ``check=False`` so
        they never load a model and still work on a layer that awaits a reindex.
        """
        self.settings.layer(layer)  # LayerNotFound for unknown names
        col = self._cols.get(layer)
        if col is None:
            name = self.store.aliases().get(layer)
            col = self.store.get_collection(name) if name else None
            if col is None:
                if not create:
                    return None
                self._require_writable()
                col = self.create_layer_collection(layer, self.embedder.identity)
                self.store.set_alias(layer, col.name)
                self._checked.add(layer)
            self._cols[layer] = col
        if check and layer not in self._checked:
            self._check_collection(layer, col)
            self._checked.add(layer)
        return col

    def _check_collection(self, layer: str, col: Collection) -> None:
        stored = ModelIdentity.from_metadata(col.metadata)
        if stored is None:
            raise ConfigError(
                f"collection {col.name} of layer {layer!r} carries no osprag model identity",
                hint="it was not created by osprag; import it with `osp import` instead",
            )
        current = self.embedder.identity
        diffs = stored.differences(current)
        if diffs:
            raise EmbeddingMismatch(
                f"layer {layer!r} was built with {stored.name} (dim {stored.dimension}) but the "
                f"configured model is {current.name} (dim {current.dimension}); differs in "
                f"{', '.join(diffs)}",
                hint=f"set OSP_EMBEDDING_MODEL={stored.name} or run "
                f"`osp reindex --model {current.name}` to re-embed the layer",
            )
        self.warnings[layer] = self._drift(col)
        for warning in self.warnings[layer]:
            log.warning("layer %s: %s", layer, warning)

    def _drift(self, col: Collection) -> list[str]:
        have = col.index_config()
        want = IndexConfig.from_settings(self.settings)
        if have is None:
            return []
        out = []
        for field, label in (
            ("space", "space"),
            ("m", "HNSW M"),
            ("ef_construction", "ef_construction"),
        ):
            if getattr(have, field) != getattr(want, field):
                out.append(
                    f"{label} is {getattr(have, field)} but settings say {getattr(want, field)}; "
                    "the stored index is used — run `osp reindex` to rebuild with the settings"
                )
        if have.ef_search != want.ef_search:
            out.append(f"ef_search is {have.ef_search}, settings say {want.ef_search}")
        return out

    def _space(self, col: Collection) -> str:
        conf = col.index_config()
        return conf.space if conf else self.settings.space

    def _layer_written(self, layer: str, ids: Sequence[str] | None = None) -> None:
        """Before every write: this process's in-memory copy re-reads ``ids`` (None: all)."""
        from .search import snapshot

        snapshot.invalidate(self, layer, ids)

    def _require_writable(self) -> None:
        if self.read_only:
            raise AccessDenied(
                "this knowledge base was opened read-only",
                hint="open it without read_only (only one writer per embedded data dir)",
            )

    # ----------------------------------------------------------------- writes

    def add(
        self,
        layer: str,
        texts: str | Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
        embeddings: Any = None,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Insert new records; ids that already exist are an error (Chroma ignores them)."""
        return self._write("add", layer, texts, ids, metadatas, embeddings, progress)

    def upsert(
        self,
        layer: str,
        texts: str | Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
        embeddings: Any = None,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Insert or replace records (text, metadata and vector replaced as a whole)."""
        return self._write("upsert", layer, texts, ids, metadatas, embeddings, progress)

    def _write(
        self,
        op: str,
        layer: str,
        texts: str | Sequence[str],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None,
        embeddings: Any,
        progress: Progress | None,
        allow_reserved: bool = False,
    ) -> WriteResult:
        self._require_writable()
        cfg = self.settings.layer(layer)
        docs = _as_list(texts, "texts")
        n = len(docs)
        if metadatas is None or isinstance(metadatas, Mapping):
            raw_metas: list[Mapping[str, Any] | None] = [metadatas] * n
        else:
            raw_metas = list(metadatas)
            if len(raw_metas) != n:
                raise InvalidInput(f"{len(raw_metas)} metadatas for {n} texts")
        metas = [
            validate_metadata(
                m,
                default_access_level=cfg.default_access_level,
                where=f"metadata[{i}]",
                allow_reserved=allow_reserved,
            )
            for i, m in enumerate(raw_metas)
        ]
        if ids is None:
            id_list = [default_id(layer, d, m) for d, m in zip(docs, metas, strict=True)]
        else:
            id_list = _as_list(ids, "ids") if not isinstance(ids, str) else [ids]
            if len(id_list) != n:
                raise InvalidInput(f"{len(id_list)} ids for {n} texts")
        seen: set[str] = set()
        dups = sorted({i for i in id_list if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        if dups:
            raise DuplicateId(
                f"{len(dups)} id(s) repeated in one call: {', '.join(dups[:5])}",
                hint="ids must be unique within a call; nothing was written",
            )
        vectors = self._check_vectors(embeddings, n, layer) if embeddings is not None else None
        col = self._collection(layer, create=True)
        assert col is not None
        if op == "add":
            existing = col.existing_ids(id_list)
            if existing:
                shown = ", ".join(sorted(existing)[:5])
                raise DuplicateId(
                    f"{len(existing)} id(s) already exist in layer {layer!r}: {shown}",
                    hint="use upsert to replace them; nothing was written",
                )
        write_metas: list[dict[str, Any]] = [dict(m) for m in metas]
        if op == "upsert" and not allow_reserved:
            # Ingestion's chunk ids carry the document revision, so a rewrite of an id always
            # brings the same keys: only user upserts need the stale-key clearing round trip.
            # Chroma's upsert merges metadata; a replacement must clear the keys it drops.
            old = col.stored_metadatas(id_list)
            for rid, meta in zip(id_list, write_metas, strict=True):
                for key in old.get(rid, {}):
                    meta.setdefault(key, None)
        result = WriteResult(layer=layer, op=op, ids=id_list)
        if vectors is None:
            vectors, result.embedded, result.cached = self._embed_documents(docs)
        self._layer_written(layer, id_list)
        col.write(op, id_list, vectors.tolist(), docs, write_metas, progress)
        self.lexical.upsert(layer, id_list, docs, metas)
        self.record_write(layer, op, id_list)
        return result

    def write_chunks(
        self,
        layer: str,
        texts: Sequence[str],
        *,
        ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
        progress: Progress | None = None,
    ) -> WriteResult:
        """Upsert ingestion chunks, whose metadata carries osprag's internal ``osp_*`` keys."""
        return self._write(
            "upsert", layer, texts, ids, metadatas, None, progress, allow_reserved=True
        )

    def ingest(
        self,
        paths: Sequence[str | Path],
        layer: str,
        *,
        recursive: bool = True,
        glob: str | None = None,
        dry_run: bool = False,
        overrides: Mapping[str, Any] | None = None,
        progress: IngestProgress | None = None,
        max_access_level: int | None = None,
    ) -> IngestReport:
        """Sync folders into a layer (new added, changed replaced, unchanged skipped, gone
        deleted) or upsert single files; see ``osprag.ingest.sync``. ``max_access_level``:
        an uploader's clearance, above which nothing is written or replaced."""
        from .ingest.sync import ingest

        return ingest(
            self,
            paths,
            layer,
            recursive=recursive,
            glob=glob,
            dry_run=dry_run,
            overrides=overrides,
            progress=progress,
            max_access_level=max_access_level,
        )

    def import_csv(self, path: str | Path, layer: str) -> CsvImportReport:
        """One record per CSV row (columns id, text, doc_type, version, status, …)."""
        from .ingest.csv_import import import_csv

        self._require_writable()
        return import_csv(self, Path(path), layer)

    def _embed_documents(self, docs: list[str]) -> tuple[np.ndarray[Any, Any], int, int]:
        embedder = self.embedder
        before = (embedder.hits, embedder.misses) if isinstance(embedder, CachingEmbedder) else None
        vectors = np.asarray(embedder.embed_documents(docs), dtype=np.float32)
        if before is not None and isinstance(embedder, CachingEmbedder):
            return vectors, embedder.misses - before[1], embedder.hits - before[0]
        return vectors, len(docs), 0

    def _check_vectors(self, embeddings: Any, n: int, layer: str) -> np.ndarray[Any, Any]:
        try:
            vectors = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError):
            raise DimensionMismatch(
                "embeddings must be a rectangular list of numbers (ragged lengths?)"
            ) from None
        existing = self._collection(layer, create=False, check=False)
        stored = ModelIdentity.from_metadata(existing.metadata) if existing else None
        dim = stored.dimension if stored else self.embedder.identity.dimension
        if vectors.ndim != 2 or vectors.shape[0] != n or vectors.shape[1] != dim:
            raise DimensionMismatch(
                f"layer {layer!r} expects {n} vectors of dimension {dim}, got shape "
                f"{tuple(vectors.shape)}",
                hint="pass vectors from the layer's model, or omit embeddings to let osprag embed",
            )
        if not np.isfinite(vectors).all():
            raise DimensionMismatch("embeddings contain NaN or infinity")
        return vectors

    def update(
        self,
        layer: str,
        ids: Sequence[str],
        *,
        texts: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> WriteResult:
        """Change existing records; metadata keys merge into what is stored (Chroma semantics)."""
        self._require_writable()
        self.settings.layer(layer)
        id_list = _as_list(ids, "ids")
        if len(set(id_list)) != len(id_list):
            raise DuplicateId("ids repeated in one update call; nothing was written")
        docs = _as_list(texts, "texts") if texts is not None else None
        if docs is not None and len(docs) != len(id_list):
            raise InvalidInput(f"{len(docs)} texts for {len(id_list)} ids")
        metas = None
        if metadatas is not None:
            if len(metadatas) != len(id_list):
                raise InvalidInput(f"{len(metadatas)} metadatas for {len(id_list)} ids")
            metas = [
                validate_update_metadata(m, where=f"metadata[{i}]") for i, m in enumerate(metadatas)
            ]
        if docs is None and metas is None:
            raise InvalidInput("update needs texts or metadatas")
        col = self._collection(layer, create=False)
        missing = set(id_list) - (col.existing_ids(id_list) if col else set())
        if missing:
            raise NotFound(
                f"{len(missing)} id(s) not in layer {layer!r}: {', '.join(sorted(missing)[:5])}",
                hint="use upsert to create records; nothing was written",
            )
        assert col is not None
        result = WriteResult(layer=layer, op="update", ids=id_list)
        vectors = None
        if docs is not None:
            vectors, result.embedded, result.cached = self._embed_documents(docs)
        self._layer_written(layer, id_list)
        col.write("update", id_list, vectors.tolist() if vectors is not None else None, docs, metas)
        fresh = col.get(ids=id_list, include=["documents", "metadatas"])
        self.lexical.upsert(
            layer,
            fresh["ids"],
            [d or "" for d in fresh["documents"]],
            [m or {} for m in fresh["metadatas"]],
        )
        self.record_write(layer, "update", id_list)
        return result

    def delete(
        self,
        layer: str,
        *,
        ids: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete matching records and return how many existed; ids are resolved first."""
        self._require_writable()
        self.settings.layer(layer)
        wh = effective_where(where, LOCAL)
        wd = validate_where_document(where_document)
        if ids is None and wh is None and wd is None:
            raise InvalidInput(
                "delete needs ids, where or where_document",
                hint="to empty a whole layer use `osp drop LAYER --yes`",
            )
        col = self._collection(layer, create=False, check=False)
        if col is None:
            return 0
        targets = col.get(
            ids=_as_list(ids, "ids") if ids is not None else None,
            where=wh,
            where_document=wd,
            include=[],
        )["ids"]
        if targets:
            self._layer_written(layer, targets)
            col.delete(targets)
            self.lexical.delete(layer, targets)
            self.record_write(layer, "delete", targets)
        return len(targets)

    def drop_layer(self, layer: str, *, yes: bool = False) -> int:
        """Remove a layer's data entirely; refuses without ``yes`` because it cannot be undone."""
        self._require_writable()
        self.settings.layer(layer)
        if not yes:
            raise InvalidInput(
                f"refusing to drop layer {layer!r} without confirmation",
                hint="pass --yes (CLI) or yes=True",
            )
        col = self._collection(layer, create=False, check=False)
        if col is None:
            return 0
        count = col.count()
        docs = self.store.documents()
        doc_ids = docs.get(where={"layer": layer}, include=[])["ids"]
        if doc_ids:
            docs.delete(doc_ids)
        self._layer_written(layer)
        self.store.set_alias(layer, None)
        self.store.delete_collection(col.name)
        self.lexical.clear(layer)
        self._cols.pop(layer, None)
        self.record_write(layer, "reset")
        return count

    # ----------------------------------------------------------------- reads

    def _layers_arg(self, layers: str | Sequence[str] | None) -> list[str]:
        if layers is None:
            return self.settings.ordered_layers()
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names:
            raise InvalidInput("layers must not be an empty list (omit it for all layers)")
        for name in names:
            self.settings.layer(name)
        return list(dict.fromkeys(names))

    def get(
        self,
        layer: str,
        *,
        ids: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include: Sequence[str] = ("documents", "metadatas"),
        principal: Principal = LOCAL,
    ) -> list[Record]:
        """Records by id or filter, only those the principal's clearance allows."""
        wh = effective_where(where, principal)
        wd = validate_where_document(where_document)
        inc = _check_include(include)
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise InvalidInput(f"limit must be >= 1, got {limit}")
        if offset is not None and offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        col = self._collection(layer, create=False, check=False)
        if col is None:
            return []
        res = col.get(
            ids=_as_list(ids, "ids") if ids is not None else None,
            where=wh,
            where_document=wd,
            limit=limit,
            offset=offset,
            include=sorted(set(inc) | {"metadatas"}),
        )
        out = []
        stale = self._stale_filter([m or {} for m in res["metadatas"]])
        for i, rid in enumerate(res["ids"]):
            meta = dict(res["metadatas"][i] or {})
            if not self._allowed(meta, principal) or stale(meta):
                continue
            out.append(
                Record(
                    id=rid,
                    layer=layer,
                    text=res["documents"][i] if "documents" in inc else None,
                    metadata=self.public_metadata(meta) if "metadatas" in inc else {},
                    embedding=[float(x) for x in res["embeddings"][i]]
                    if "embeddings" in inc
                    else None,
                )
            )
        return out

    def current_revisions(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Current revision per ingested document: the pointers that make replacement atomic."""
        if not doc_ids:
            return {}
        res = self.store.documents().get(ids=list(doc_ids), include=["metadatas"])
        return {
            rid: str((meta or {}).get("rev"))
            for rid, meta in zip(res["ids"], res["metadatas"], strict=True)
        }

    def _stale_filter(
        self, metas: Sequence[Mapping[str, Any]]
    ) -> Callable[[Mapping[str, Any]], bool]:
        """A predicate that is True for chunks of a document version that is not current."""
        doc_ids = sorted({str(m["osp_doc"]) for m in metas if m and "osp_doc" in m})
        if not doc_ids:
            return lambda meta: False
        return self.stale_predicate(self.current_revisions(doc_ids))

    @staticmethod
    def stale_predicate(
        current: Mapping[str, str | None],
    ) -> Callable[[Mapping[str, Any]], bool]:
        """True for a chunk whose document's current revision (``current``) is another one."""
        return lambda meta: (
            "osp_doc" in meta and current.get(str(meta["osp_doc"])) != str(meta.get("osp_rev"))
        )

    @staticmethod
    def public_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
        """Internal ``osp_`` keys hidden; an ingested chunk names its document as ``doc_id``
        (what ``/api/v1/documents/{id}`` opens)."""
        out = {k: v for k, v in meta.items() if not k.startswith("osp_")}
        if "osp_doc" in meta:
            out["doc_id"] = meta["osp_doc"]
        return out

    @staticmethod
    def _allowed(meta: Mapping[str, Any], principal: Principal) -> bool:
        """Defence in depth: the filter already excluded these; a bug there must not leak."""
        level = meta.get("access_level", 4)
        return isinstance(level, int) and level <= principal.clearance

    def count(self, layer: str, *, principal: Principal = LOCAL) -> int:
        col = self._collection(layer, create=False, check=False)
        if col is None:
            return 0
        clause = clearance_clause(principal)
        if clause is None:
            return col.count()
        return len(col.get(where=clause, include=[])["ids"])

    @overload
    def query(  # type: ignore[overload-overlap]
        self,
        texts: str,
        *,
        layers: str | Sequence[str] | None = ...,
        n_results: int = ...,
        where: Mapping[str, Any] | None = ...,
        where_document: Mapping[str, Any] | None = ...,
        include: Sequence[str] = ...,
        min_score: float | None = ...,
        principal: Principal = ...,
        mode: str | None = ...,
        alpha: float | None = ...,
        include_history: bool = ...,
        route_tags: bool | None = ...,
        expand: bool | None = ...,
        layer_min: Mapping[str, int] | None = ...,
        use_cache: bool = ...,
        explain: bool = ...,
    ) -> QueryResult: ...

    @overload
    def query(
        self,
        texts: Sequence[str],
        *,
        layers: str | Sequence[str] | None = ...,
        n_results: int = ...,
        where: Mapping[str, Any] | None = ...,
        where_document: Mapping[str, Any] | None = ...,
        include: Sequence[str] = ...,
        min_score: float | None = ...,
        principal: Principal = ...,
        mode: str | None = ...,
        alpha: float | None = ...,
        include_history: bool = ...,
        route_tags: bool | None = ...,
        expand: bool | None = ...,
        layer_min: Mapping[str, int] | None = ...,
        use_cache: bool = ...,
        explain: bool = ...,
    ) -> list[QueryResult]: ...

    def query(
        self,
        texts: str | Sequence[str],
        *,
        layers: str | Sequence[str] | None = None,
        n_results: int = 5,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        include: Sequence[str] = ("documents", "metadatas"),
        min_score: float | None = None,
        principal: Principal = LOCAL,
        mode: str | None = None,
        alpha: float | None = None,
        include_history: bool = False,
        route_tags: bool | None = None,
        expand: bool | None = None,
        layer_min: Mapping[str, int] | None = None,
        use_cache: bool = True,
        explain: bool = False,
    ) -> QueryResult | list[QueryResult]:
        """Search the chosen layers (default all) and merge into one ranking per query.

        ``mode``: dense (cosine score), lexical (BM25 / the query's best BM25) or hybrid (the
        default: ``alpha`` × dense + (1 − alpha) × lexical, both normalised to [0, 1]).
        Only documents in force are searched unless ``include_history``; a known tag in the
        query (``[QM]``, ``QM:``) filters unless ``route_tags=False``; glossary synonyms expand
        the lexical leg unless ``expand=False``; ``layer_min`` ({"kern": 2}) overrides the
        layers' ``min_hits``. See docs/retrieval.md.
        Every hit also carries ``relevance``, a calibrated probability that ``min_score``
        filters on; ``explain`` adds each leg's raw score and rank (search/calibration.py).
        """
        from .search.answer import QueryOptions, answer
        from .search.engine import QueryPlan, check_mode
        from .search.quota import layer_minimums

        queries = _as_list(texts, "texts")
        if isinstance(n_results, bool) or not isinstance(n_results, int) or n_results < 1:
            raise InvalidInput(f"n_results must be an integer >= 1, got {n_results!r}")
        if n_results > MAX_RESULTS:
            raise InvalidInput(f"n_results must be <= {MAX_RESULTS}, got {n_results}")
        if min_score is not None and (
            isinstance(min_score, bool) or not isinstance(min_score, int | float)
        ):
            raise InvalidInput(f"min_score must be a number, got {min_score!r}")
        weight = self.settings.fusion_alpha if alpha is None else alpha
        if weight is None:
            from .search.fusion import default_alpha

            weight = default_alpha(self.embedder.identity.name)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise InvalidInput(f"alpha must be a number in [0, 1], got {alpha!r}")
        plan = QueryPlan(
            queries=queries,
            layers=[],
            n_results=n_results,
            where=effective_where(where, principal),
            where_document=validate_where_document(where_document),
            include=_check_include(include),
            min_score=min_score,
            principal=principal,
            mode=check_mode(mode or self.settings.search_mode),
            alpha=float(weight),
            explain=bool(explain),
        )
        names = self._layers_arg(layers)
        plan.layer_min = layer_minimums(
            names, {n: c.min_hits for n, c in self.settings.layers.items()}, layer_min
        )
        options = QueryOptions(
            include_history=bool(include_history),
            route_tags=self.settings.tag_routing if route_tags is None else bool(route_tags),
            expand=self.settings.glossary if expand is None else bool(expand),
            use_cache=bool(use_cache) and self.settings.query_cache,
        )
        self.catch_up()
        plan.layers = [
            (n, c) for n in names if (c := self._collection(n, create=False)) is not None
        ]
        results = answer(self, plan, options)
        return results[0] if isinstance(texts, str) else results

    def answer(self, question: str, **options: Any) -> Answer:
        """An answer with checked ``[n]`` citations; options as ``osprag.generate.answer``."""
        from .generate.answerer import answer

        return answer(self, question, **options)

    def answer_stream(self, question: str, **options: Any) -> Iterator[AnswerEvent]:
        """The answer as events (sources, checked text deltas, done); see ``answer``."""
        from .generate.answerer import answer_stream

        return answer_stream(self, question, **options)

    # ----------------------------------------------------------------- freshness and cache

    @property
    def freshness(self) -> Freshness:
        if self._freshness is None:
            from .freshness import Freshness

            self._freshness = Freshness(self)
        return self._freshness

    def record_write(self, layer: str, op: str, ids: Sequence[str] = ()) -> None:
        """Call after any write to a layer's collection that bypasses this class (restore,
        import, migrate): raises the layer's generation and, in server mode, appends to the
        write log so other processes apply ``ids`` (op ``"reset"``: rebuild the whole layer)."""
        self.freshness.record(layer, op, ids)

    def generation(self, layer: str) -> Generation:
        """``(epoch, seq)`` of a layer as this process's derived data knows it: changes with
        every write here and every write caught up from elsewhere. Cheap (one SQLite read);
        ``query`` catches up first, other callers may call ``catch_up()``."""
        return self.freshness.generation(layer)

    def catch_up(self, *, force: bool = False) -> None:
        """Apply other processes' writes and a restore's new epoch (docs/retrieval.md)."""
        self.freshness.catch_up(force=force)

    def new_epoch(self) -> int:
        """After a restore replaced the store's contents: every process drops its caches."""
        self._require_writable()
        epoch = self.store.bump_epoch()
        self.catch_up(force=True)
        return epoch

    @property
    def result_cache(self) -> ResultCache:
        if self._result_cache is None:
            from .search.cache import ResultCache

            s = self.settings
            self._result_cache = ResultCache(s.query_cache_size, s.query_cache_ttl)
        return self._result_cache

    def cache_stats(self) -> dict[str, Any]:
        """Query cache hit rate and size; freshness counters (catch-ups, entries applied)."""
        stats: dict[str, Any] = (
            self.result_cache.stats() if self.settings.query_cache else {"enabled": False}
        )
        if self._freshness is not None:
            stats["freshness"] = dict(self._freshness.stats)
        return stats

    @property
    def glossary(self) -> Glossary:
        if self._glossary is None:
            from .search.glossary import load_glossary

            self._glossary = load_glossary(self.settings.glossary_path)
        return self._glossary

    # ----------------------------------------------------------------- lexical index

    def _lexical_path(self) -> Path | None:
        s = self.settings
        if s.effective_storage == "embedded":
            return s.data_dir / "lexical.sqlite"
        if s.effective_storage == "server":
            safe = re.sub(
                r"[^A-Za-z0-9_.-]+", "_", f"{s.chroma_url}-{s.chroma_tenant}-{s.chroma_database}"
            )
            return s.effective_cache_dir / f"lexical-{safe}.sqlite"
        return None

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 index: derived from Chroma, updated with every write, rebuildable."""
        if self._lexical is None:
            from .search.lexical import DOC_WEIGHT, LexicalIndex

            path = self._lexical_path()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            weight = self.settings.lexical_doc_weight
            self._lexical = LexicalIndex(path, doc_weight=DOC_WEIGHT if weight is None else weight)
        return self._lexical

    def lexical_for(self, layers: Sequence[str]) -> LexicalIndex:
        """The index, with each layer checked against Chroma once per process and rebuilt
        when counts differ (a crash between the two writes, or another machine's writes)."""
        index = self.lexical
        for layer in layers:
            if layer in self._lexical_checked:
                continue
            col = self._collection(layer, create=False, check=False)
            have = col.count() if col is not None else 0
            if index.count(layer) != have:
                log.warning(
                    "lexical index of layer %s has %d chunks, Chroma %d: rebuilding",
                    layer,
                    index.count(layer),
                    have,
                )
                self.rebuild_lexical([layer])
            self._lexical_checked.add(layer)
        return index

    def rebuild_lexical(
        self, layers: Sequence[str] | None = None, *, batch: int = 1000
    ) -> dict[str, int]:
        """Rebuild the lexical index of layers from Chroma (``osp reindex --lexical``).

        Streamed: ``batch`` records at a time, without embeddings, each batch committed as it
        comes; a process that has not queried holds no postings (``LexicalIndex.loaded``)."""
        index = self.lexical
        out: dict[str, int] = {}
        for layer in self._layers_arg(layers):
            index.clear(layer)
            col = self._collection(layer, create=False, check=False)
            total = col.count() if col is not None else 0
            offset = 0
            while col is not None and offset < total:
                page = col.get(limit=batch, offset=offset, include=["documents", "metadatas"])
                if not page["ids"]:
                    break
                index.upsert(
                    layer,
                    page["ids"],
                    [d or "" for d in page["documents"]],
                    [m or {} for m in page["metadatas"]],
                )
                offset += len(page["ids"])
            out[layer] = offset
            self._lexical_checked.add(layer)
        self.freshness.gens.bump(out)
        return out

    def delete_ids(self, layer: str, ids: Sequence[str]) -> None:
        """Delete records by id from Chroma and the lexical index (ingestion's collector)."""
        self._require_writable()
        col = self._collection(layer, create=False, check=False)
        if col is None or not ids:
            return
        self._layer_written(layer, list(ids))
        col.delete(list(ids))
        self.lexical.delete(layer, list(ids))
        self.record_write(layer, "delete", list(ids))

    # ----------------------------------------------------------------- documents

    def documents(
        self,
        *,
        layer: str | None = None,
        limit: int = 100,
        offset: int = 0,
        principal: Principal = LOCAL,
    ) -> tuple[list[DocumentInfo], int]:
        """Ingested documents the principal may see (one page) and their total."""
        from .documents import list_documents

        return list_documents(self, layer=layer, limit=limit, offset=offset, principal=principal)

    def document(
        self, doc_id: str, *, principal: Principal = LOCAL
    ) -> tuple[DocumentInfo, list[Record]]:
        """One document and its current chunks in reading order (NotFound above clearance)."""
        from .documents import get_document

        return get_document(self, doc_id, principal=principal)

    def delete_document(self, doc_id: str, *, principal: Principal = LOCAL) -> DocumentInfo:
        """Remove one ingested document and all its chunks (NotFound above clearance)."""
        from .documents import delete_document

        self._require_writable()
        return delete_document(self, doc_id, principal=principal)

    # ----------------------------------------------------------------- introspection

    def stats(self) -> list[LayerStats]:
        """Per layer: count, model identity, index config, disk size, and any warnings."""
        aliases = self.store.aliases()
        out = []
        for name in self.settings.ordered_layers():
            cfg = self.settings.layers[name]
            col = self.store.get_collection(aliases[name]) if name in aliases else None
            warnings: list[str] = []
            model = index = None
            count, disk = 0, None
            if col is not None:
                count = col.count()
                stored = ModelIdentity.from_metadata(col.metadata)
                model = stored.__dict__ if stored else None
                conf = col.index_config()
                index = conf.__dict__ if conf else None
                disk = self.store.collection_disk_bytes(col.id)
                try:
                    self._check_collection(name, col)
                    warnings = self.warnings.get(name, [])
                except OspragError as exc:
                    warnings = [str(exc)]
            out.append(
                LayerStats(
                    layer=name,
                    collection=col.name if col else None,
                    count=count,
                    description=cfg.description,
                    weight=cfg.weight,
                    model=model,
                    index=index,
                    disk_bytes=disk,
                    warnings=warnings,
                )
            )
        return out

    def collection_for(self, layer: str) -> Collection | None:
        """The physical collection behind a layer (for ops modules, not for end users)."""
        try:
            return self._collection(layer, create=False, check=False)
        except StoreError:
            self._cols.pop(layer, None)
            raise
