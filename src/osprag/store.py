"""The only module that imports chromadb.

It turns chromadb's clients into one small interface, maps its exceptions (some are plain
``ValueError``s, a connection failure is an ``httpx`` error, a bad collection metadata value is a
``BaseException`` panic) onto osprag's error tree, retries transient server errors, splits writes
by the server's batch limit, and keeps the layer → collection alias registry.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from .config import Settings
from .errors import (
    InvalidFilter,
    InvalidInput,
    NotWritable,
    OspragError,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REGISTRY = "osp__registry"
DOCUMENTS = "osp__documents"
DOCUMENTS_KEY = "osp_documents"  # registry key naming the live document-registry collection
WRITELOG = "osp__writelog"
EPOCH_KEY = "osp_epoch"
_ALIAS = "alias."
T = TypeVar("T")


@dataclass(frozen=True)
class IndexConfig:
    space: str
    m: int
    ef_construction: int
    ef_search: int

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexConfig:
        return cls(settings.space, settings.hnsw_m, settings.ef_construction, settings.ef_search)

    def to_chroma(self) -> dict[str, Any]:
        return {
            "hnsw": {
                "space": self.space,
                "max_neighbors": self.m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
            }
        }


def _is_transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        s in text
        for s in ("connect", "timeout", "timed out", "503", "502", "504", "temporarily", "reset")
    )


class Store:
    """A connection to one Chroma database (embedded directory, server, or in-memory)."""

    def __init__(self, settings: Settings) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self.settings = settings
        self.mode = settings.effective_storage
        self._documents: Collection | None = None
        self._writelog: Collection | None = None
        self._chroma = chromadb
        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if self.mode == "embedded":
            data_dir = settings.data_dir
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                probe = data_dir / ".osp-write-probe"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise NotWritable(
                    f"data dir {data_dir} is not writable: {exc.strerror or exc}",
                    hint="set OSP_DATA_DIR to a writable directory or fix its permissions",
                ) from None
            self.where = str(data_dir.resolve())
            self.client = self._call(
                lambda: chromadb.PersistentClient(path=self.where, settings=chroma_settings),
                retry=False,
            )
        elif self.mode == "server":
            assert settings.chroma_url is not None
            self.where = settings.chroma_url
            self.client = self._connect_server(chroma_settings)
        else:
            self.where = "memory"
            self.client = chromadb.EphemeralClient(settings=chroma_settings)
        self.max_batch_size = int(self._call(self.client.get_max_batch_size))

    # ----------------------------------------------------------- connection

    def _headers(self) -> dict[str, str]:
        headers = dict(self.settings.chroma_headers)
        if self.settings.chroma_token is not None:
            headers.setdefault(
                "Authorization", f"Bearer {self.settings.chroma_token.get_secret_value()}"
            )
        return headers

    def _connect_server(self, chroma_settings: Any) -> Any:
        url = urlparse(self.where)
        ssl = url.scheme == "https"
        port = url.port or (443 if ssl else 8000)
        host = url.hostname or "127.0.0.1"
        headers = self._headers()
        tenant, database = self.settings.chroma_tenant, self.settings.chroma_database

        http_client = functools.partial(
            self._chroma.HttpClient,
            host=host,
            port=port,
            ssl=ssl,
            headers=headers,
            tenant=tenant,
            database=database,
            settings=chroma_settings,
        )

        def connect() -> Any:
            try:
                return http_client()
            except self._chroma.errors.NotFoundError as exc:
                if "database" not in str(exc).lower():
                    raise
            # A fresh database (one per test, or per environment) is created on first use.
            admin_settings = self._chroma.config.Settings(
                chroma_api_impl="chromadb.api.fastapi.FastAPI",
                chroma_server_host=host,
                chroma_server_http_port=port,
                chroma_server_ssl_enabled=ssl,
                chroma_server_headers=headers or None,
                anonymized_telemetry=False,
            )
            admin = self._chroma.AdminClient(admin_settings)
            try:
                admin.create_database(database, tenant=tenant)
            except self._chroma.errors.ChromaError as exc:
                if "already exists" not in str(exc):
                    raise
            return http_client()

        return self._call(connect)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if self.mode == "server":
            return StoreUnavailable(
                f"Chroma server at {self.where} is unreachable ({type(exc).__name__}: {exc})",
                hint="start it (chroma run --host 127.0.0.1 --port 8000 --path DIR) or fix "
                "OSP_CHROMA_URL",
            )
        return StoreUnavailable(f"Chroma store at {self.where} failed: {exc}")

    def _call(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run one chromadb call with retries for transient server errors and error mapping."""
        attempts = 1 + (self.settings.retries if retry and self.mode == "server" else 0)
        delay = 0.2
        for attempt in range(attempts):
            try:
                return fn()
            except OspragError:
                raise
            except Exception as exc:
                mapped = self._map(exc)
                if isinstance(mapped, StoreUnavailable) and attempt + 1 < attempts:
                    log.info("transient store error (%s), retrying in %.1fs", exc, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise mapped from exc
            except BaseException as exc:  # pyo3 PanicException derives from BaseException
                if type(exc).__name__ == "PanicException":
                    raise StoreError(f"chromadb panicked: {exc}") from None
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _map(self, exc: Exception) -> OspragError:
        text = str(exc)
        if "Could not connect" in text or _is_transient(exc) and self.mode == "server":
            return self._unavailable(exc)
        if isinstance(exc, ValueError) and ("where" in text.lower() or "operand" in text):
            return InvalidFilter(f"filter rejected by Chroma: {text}")
        if "dimension" in text.lower():
            from .errors import DimensionMismatch

            return DimensionMismatch(text)
        if "readonly" in text.lower() or "read-only" in text.lower():
            return NotWritable(f"store at {self.where} is read-only: {text}")
        if isinstance(exc, self._chroma.errors.InvalidArgumentError):
            return InvalidInput(f"Chroma rejected the request: {text}")
        return StoreError(f"Chroma error ({type(exc).__name__}): {text}")

    # ----------------------------------------------------------- collections

    def version(self) -> str:
        return str(self._call(self.client.get_version))

    def heartbeat(self) -> int:
        return int(self._call(self.client.heartbeat))

    def list_collections(self) -> list[str]:
        cols = self._call(self.client.list_collections)
        return [c.name if hasattr(c, "name") else str(c) for c in cols]

    def get_collection(self, name: str) -> Collection | None:
        try:
            col = self._call(lambda: self.client.get_collection(name, embedding_function=None))
        except StoreError as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None
            raise
        return Collection(self, col)

    def create_collection(
        self, name: str, metadata: dict[str, Any], index: IndexConfig
    ) -> Collection:
        _check_scalar_metadata(metadata)
        col = self._call(
            lambda: self.client.create_collection(
                name,
                metadata=metadata,
                configuration=index.to_chroma(),  # type: ignore[arg-type]
                embedding_function=None,
            )
        )
        return Collection(self, col)

    def delete_collection(self, name: str) -> None:
        self._call(lambda: self.client.delete_collection(name))

    # ----------------------------------------------------------- alias registry

    def _registry(self) -> Any:
        return self._call(
            lambda: self.client.get_or_create_collection(
                REGISTRY,
                metadata={"osp_schema_version": SCHEMA_VERSION},
                embedding_function=None,
            )
        )

    def registry(self) -> dict[str, Any]:
        meta = dict(self._registry().metadata or {})
        version = int(meta.get("osp_schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            from .errors import ConfigError

            raise ConfigError(
                f"store schema version {version} is newer than this osprag ({SCHEMA_VERSION})",
                hint="upgrade osprag",
            )
        return meta

    def aliases(self) -> dict[str, str]:
        return {
            k[len(_ALIAS) :]: str(v) for k, v in self.registry().items() if k.startswith(_ALIAS)
        }

    def set_alias(self, layer: str, collection: str | None) -> None:
        """Flip a layer to another collection in one metadata write (atomic in Chroma)."""
        reg = self._registry()
        meta = dict(reg.metadata or {})
        meta["osp_schema_version"] = SCHEMA_VERSION
        if collection is None:
            meta.pop(_ALIAS + layer, None)
        else:
            meta[_ALIAS + layer] = collection
        meta["osp_updated"] = time.time()
        self._call(lambda: reg.modify(metadata=meta))

    def update_registry(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply several registry changes (``None`` removes a key) in one metadata write.

        Chroma's ``modify`` replaces the whole metadata map in one SQLite transaction, so
        aliases, the document-registry pointer and the epoch flip together or not at all.
        """
        reg = self._registry()
        meta = dict(reg.metadata or {})
        for key, value in changes.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        meta["osp_schema_version"] = SCHEMA_VERSION
        meta["osp_updated"] = time.time()
        _check_scalar_metadata(meta)
        self._call(lambda: reg.modify(metadata=meta))
        self._documents = None
        return meta

    def client_version(self) -> str:
        """The chromadb library version of this process (the server's is ``version()``)."""
        return str(getattr(self._chroma, "__version__", "unknown"))

    # ----------------------------------------------------------- document registry

    def documents(self) -> Collection:
        """Per-document state of ingested files (one record per layer + source).

        Its records are the documents' current-version pointers; chunks whose revision is not
        the pointer's are invisible to readers, which makes a replacement atomic for them.
        Chroma needs a vector per record, so each carries a constant 1-d placeholder. The handle
        is kept: readers consult this registry on every query over ingested chunks, and the
        collection is never dropped.
        """
        if self._documents is not None:
            return self._documents
        # A restore builds a new registry collection and points the registry at it.
        name = str(self.registry().get(DOCUMENTS_KEY, DOCUMENTS))
        col = self._call(
            lambda: self.client.get_or_create_collection(
                name,
                metadata={"osp_schema_version": SCHEMA_VERSION},
                embedding_function=None,
            )
        )
        self._documents = Collection(self, col)
        return self._documents

    def writelog(self) -> Collection:
        """The write log that processes sharing a server catch up from (``writelog.py``)."""
        if self._writelog is None:
            col = self._call(
                lambda: self.client.get_or_create_collection(
                    WRITELOG,
                    metadata={"osp_schema_version": SCHEMA_VERSION},
                    embedding_function=None,
                )
            )
            self._writelog = Collection(self, col)
        return self._writelog

    def forget_handles(self) -> None:
        """Drop kept collection handles (after a restore replaced the collections)."""
        self._documents = None
        self._writelog = None

    def epoch(self) -> int:
        """The store's epoch: a restore increments it, so no cache key survives a restore."""
        return int(self.registry().get(EPOCH_KEY, 0))

    def bump_epoch(self) -> int:
        reg = self._registry()
        meta = dict(reg.metadata or {})
        meta[EPOCH_KEY] = int(meta.get(EPOCH_KEY, 0)) + 1
        meta["osp_updated"] = time.time()
        self._call(lambda: reg.modify(metadata=meta))
        return int(meta[EPOCH_KEY])

    # ----------------------------------------------------------- disk

    def sqlite_path(self) -> Path | None:
        """Chroma's SQLite file (embedded mode only)."""
        return Path(self.where) / "chroma.sqlite3" if self.mode == "embedded" else None

    def vector_segment(self, collection_id: str) -> dict[str, Any] | None:
        """Where the collection's HNSW segment lives and how far it was flushed (embedded only).

        ``flushed_seq`` is the last log position persisted into the segment files (None when
        the segment was never flushed: its vectors live in Chroma's log); ``log_min_seq`` is the
        oldest log entry still kept for the collection. A flushed segment with missing files, or
        a log that was purged past the flushed position, means vectors are lost.
        """
        path = self.sqlite_path()
        if path is None:
            return None
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT id FROM segments WHERE collection = ? AND scope = 'VECTOR'",
                (collection_id,),
            ).fetchone()
            if row is None:
                return None
            seg = str(row[0])
            flushed = db.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (seg,))
            flushed_row = flushed.fetchone()
            log_min = db.execute(
                "SELECT MIN(seq_id) FROM embeddings_queue WHERE topic LIKE ?",
                (f"%{collection_id}",),
            ).fetchone()
        folder = Path(self.where) / seg
        return {
            "segment": seg,
            "folder": folder,
            "flushed_seq": int(flushed_row[0]) if flushed_row else None,
            "log_min_seq": int(log_min[0]) if log_min and log_min[0] is not None else None,
        }

    def collection_disk_bytes(self, collection_id: str) -> int | None:
        """Bytes of the collection's vector segment folder (embedded mode only)."""
        if self.mode != "embedded":
            return None
        root = Path(self.where)
        try:
            with sqlite3.connect(f"file:{root / 'chroma.sqlite3'}?mode=ro", uri=True) as db:
                rows = db.execute(
                    "SELECT id FROM segments WHERE collection = ?", (collection_id,)
                ).fetchall()
        except sqlite3.Error:
            return None
        total = 0
        for (seg,) in rows:
            folder = root / str(seg)
            if folder.is_dir():
                total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return total

    def reopen(self) -> None:
        """A new embedded client: chromadb reads a changed ef_search only when it loads the
        index, i.e. in a new process or after its per-path system cache entry is dropped;
        collection handles taken before keep the old index, so callers take new ones."""
        if self.mode != "embedded":
            raise InvalidInput("only an embedded store can be reopened in-process")
        from chromadb.api.shared_system_client import SharedSystemClient
        from chromadb.config import Settings as ChromaSettings

        # forget only this path's cached system; other stores in the process keep theirs
        ident = str(getattr(self.client, "_identifier", ""))
        SharedSystemClient._identifier_to_system.pop(ident, None)
        SharedSystemClient._identifier_to_refcount.pop(ident, None)
        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        self.client = self._call(
            lambda: self._chroma.PersistentClient(path=self.where, settings=chroma_settings),
            retry=False,
        )
        self._documents = None

    def close(self) -> None:
        # chromadb caches one System per path; nothing to release explicitly in 1.5.
        pass


def _check_scalar_metadata(meta: dict[str, Any]) -> None:
    for key, value in meta.items():
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(f"collection metadata {key!r} must be a scalar, got {value!r}")


class Collection:
    """One physical Chroma collection with batched, error-mapped operations."""

    def __init__(self, store: Store, col: Any) -> None:
        self.store = store
        self._col = col
        self.name: str = col.name
        self.id: str = str(col.id)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._col.metadata or {})

    def index_config(self) -> IndexConfig | None:
        conf = getattr(self._col, "configuration", None) or {}
        hnsw = conf.get("hnsw") if isinstance(conf, dict) else None
        if not hnsw:
            return None
        return IndexConfig(
            str(hnsw.get("space", "l2")),
            int(hnsw.get("max_neighbors", 16)),
            int(hnsw.get("ef_construction", 100)),
            int(hnsw.get("ef_search", 100)),
        )

    def set_ef_search(self, ef_search: int) -> None:
        """Persisted in the collection's configuration; a new client (process) reads it."""
        self.store._call(
            lambda: self._col.modify(configuration={"hnsw": {"ef_search": int(ef_search)}})
        )

    def modify_metadata(self, metadata: dict[str, Any]) -> None:
        _check_scalar_metadata(metadata)
        self.store._call(lambda: self._col.modify(metadata=metadata))

    def count(self) -> int:
        return int(self.store._call(self._col.count))

    def _batches(self, n: int) -> Iterator[slice]:
        size = self.store.max_batch_size
        for start in range(0, n, size):
            yield slice(start, min(n, start + size))

    def write(
        self,
        op: str,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]] | None,
        documents: Sequence[str] | None,
        metadatas: Sequence[dict[str, Any]] | None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        method = getattr(self._col, op)
        for part in self._batches(len(ids)):
            kwargs: dict[str, Any] = {"ids": list(ids[part])}
            if embeddings is not None:
                kwargs["embeddings"] = embeddings[part]
            if documents is not None:
                kwargs["documents"] = list(documents[part])
            if metadatas is not None:
                kwargs["metadatas"] = list(metadatas[part])
            self.store._call(functools.partial(method, **kwargs))
            if progress is not None:
                progress(part.stop - part.start)

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in self._batches(len(ids)):
            res = self.store._call(
                functools.partial(self._col.get, ids=list(ids[part]), include=[])
            )
            found.update(res["ids"])
        return found

    def stored_metadatas(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for part in self._batches(len(ids)):
            res = self.store._call(
                functools.partial(self._col.get, ids=list(ids[part]), include=["metadatas"])
            )
            for rid, meta in zip(res["ids"], res["metadatas"], strict=True):
                out[rid] = dict(meta or {})
        return out

    def get(
        self,
        ids: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include: Sequence[str] = ("documents", "metadatas"),
    ) -> dict[str, Any]:
        return dict(
            self.store._call(
                lambda: self._col.get(
                    ids=list(ids) if ids is not None else None,
                    where=where,
                    where_document=where_document,
                    limit=limit,
                    offset=offset,
                    include=list(include),
                )
            )
        )

    def query(
        self,
        embeddings: Any,
        n_results: int,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        include: Sequence[str],
    ) -> dict[str, Any]:
        return dict(
            self.store._call(
                lambda: self._col.query(
                    query_embeddings=embeddings,
                    n_results=n_results,
                    where=where,
                    where_document=where_document,
                    include=list(include),
                )
            )
        )

    def delete(self, ids: Sequence[str]) -> None:
        for part in self._batches(len(ids)):
            self.store._call(functools.partial(self._col.delete, ids=list(ids[part])))


def embedded_write_state(data_dir: Path) -> list[Any] | None:
    """What changes with every write to an embedded store, read from Chroma's SQLite file
    without importing chromadb (``ingest/noop.py``: an unchanged re-sync must not pay ~0.4 s of
    imports); ``None`` when there is no such file or it cannot be read.

    Chroma's write log (``embeddings_queue``) gets a row with a rising ``seq_id`` for every
    record write to any collection, and pruning never drops a collection's newest row; the
    ``collections`` and ``collection_metadata`` tables cover aliases, the registry's epoch and
    collections created or dropped (ids are never reused). Opening a client writes elsewhere
    (``acquire_write``), so reads and opens leave this state alone.
    """
    path = data_dir / "chroma.sqlite3"
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
        try:
            db.execute("BEGIN")  # one read snapshot for all of it
            state: list[Any] = [
                db.execute("SELECT MAX(seq_id) FROM embeddings_queue").fetchone(),
                db.execute("SELECT id, name FROM collections ORDER BY id").fetchall(),
                db.execute(
                    "SELECT collection_id, key, str_value, int_value, float_value, bool_value "
                    "FROM collection_metadata ORDER BY collection_id, key"
                ).fetchall(),
                db.execute("SELECT dir, version FROM migrations ORDER BY 1, 2").fetchall(),
            ]
            db.execute("COMMIT")
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.debug("Chroma's write state is unreadable: %s", exc)
        return None
    return state
