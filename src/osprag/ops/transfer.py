"""Portable layer files: JSONL (optionally gzip) with embeddings, streamed in constant memory.

One file holds one layer::

    {"type": "header", "format": "osprag-export", "version": 1, "layer": ..., "identity": {...},
     "index": {...}, "count": N, ...}
    {"type": "chunk", "id": ..., "document": ..., "metadata": {...}, "embedding": "<base64>"}
    ...
    {"type": "document", "id": ..., "document": ..., "metadata": {...}}   (document registry)
    {"type": "trailer", "chunks": N, "documents": M}

Embeddings are base64 of little-endian float32: exactly the bits Chroma returns, handed back
unchanged on import (a JSON list of numbers is accepted too). Layers in l2/ip space round-trip
bit-for-bit; in cosine space Chroma re-normalises every inserted vector, which can move it by
one float32 ulp. Importing lives in ``importer.py``.
The document-registry records of the layer travel with its chunks: without their version
pointers, ingested chunks would be invisible after an import. The trailer makes a truncated
file detectable. Backup archives hold the same files, so there is one reader and one writer.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from osprag import __version__
from osprag.embedding import ModelIdentity
from osprag.errors import ExportInvalid, InvalidInput, OspragError
from osprag.knowledge_base import KnowledgeBase
from osprag.store import Collection, IndexConfig

FORMAT = "osprag-export"
VERSION = 1
PAGE = 1000
MAX_LINE = 64 * 1024 * 1024  # one record; a longer line is refused instead of read whole
Progress = Callable[[int], None]


# ------------------------------------------------------------------ encoding


def encode_vector(vector: Any) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(value: Any, where: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raise ExportInvalid(f"{where}: embedding is not valid base64") from None
        if len(raw) % 4:
            raise ExportInvalid(f"{where}: embedding byte length {len(raw)} is not float32")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return np.asarray(value, dtype=np.float32)
    raise ExportInvalid(f"{where}: embedding must be base64 float32 or a list of numbers")


def _line(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def identity_dict(identity: ModelIdentity | None) -> dict[str, Any] | None:
    return asdict(identity) if identity is not None else None


def identity_from(data: Any, where: str) -> ModelIdentity | None:
    if data is None:
        return None
    try:
        return ModelIdentity(**data)
    except TypeError as exc:
        raise ExportInvalid(f"{where}: header identity is malformed ({exc})") from None


def index_from(data: Any) -> IndexConfig | None:
    if not isinstance(data, dict):
        return None
    try:
        return IndexConfig(
            str(data["space"]), int(data["m"]), int(data["ef_construction"]), int(data["ef_search"])
        )
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------ export


@dataclass
class ExportReport:
    layer: str
    path: str
    chunks: int
    documents: int
    bytes: int
    seconds: float
    sha256: str | None = None
    incomplete_documents: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _page(col: Collection, offset: int, include: Sequence[str]) -> dict[str, Any]:
    return col.get(limit=PAGE, offset=offset, include=include)


def iter_chunks(col: Collection, start: int = 0) -> Iterator[dict[str, Any]]:
    """Pages of a collection with embeddings (offset paging: stable while nobody writes)."""
    offset = start
    while True:
        page = _page(col, offset, ["documents", "metadatas", "embeddings"])
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])


def iter_documents(kb: KnowledgeBase, layer: str) -> Iterator[dict[str, Any]]:
    docs = kb.store.documents()
    offset = 0
    while True:
        page = docs.get(
            where={"layer": layer}, limit=PAGE, offset=offset, include=["documents", "metadatas"]
        )
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])


class _RevisionCounts:
    """Chunks seen per (document, revision), kept in a temporary on-disk SQLite table: one
    entry per document is still proportional to the store, and export promises constant
    memory."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)  # "": private, deleted on close
        self._db.execute("PRAGMA cache_size = -2048")
        self._db.execute(
            "CREATE TABLE revs (doc TEXT, rev TEXT, n INTEGER, PRIMARY KEY (doc, rev))"
        )

    def add(self, counts: Counter[tuple[str, str]]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO revs VALUES (?, ?, ?) "
            "ON CONFLICT (doc, rev) DO UPDATE SET n = n + excluded.n",
            [(doc, rev, n) for (doc, rev), n in counts.items()],
        )
        self._db.execute("COMMIT")

    def get(self, doc: str, rev: str) -> int:
        row = self._db.execute("SELECT n FROM revs WHERE doc = ? AND rev = ?", (doc, rev))
        found = row.fetchone()
        return int(found[0]) if found else 0

    def close(self) -> None:
        self._db.close()


def write_layer(kb: KnowledgeBase, layer: str, out: IO[bytes]) -> ExportReport:
    """Stream one layer (chunks, then its document-registry records) into ``out``.

    Chunks are read before the pointers. Each pointer is then checked against the chunks
    captured for its revision: a document whose count differs was rewritten during the
    export (possible only when writers are not paused — server mode) and is reported in
    ``incomplete_documents`` so the caller can retry instead of keeping a partial document.
    """
    started = time.perf_counter()
    col = kb.collection_for(layer)
    identity = ModelIdentity.from_metadata(col.metadata) if col is not None else None
    index = col.index_config() if col is not None else None
    header = {
        "type": "header",
        "format": FORMAT,
        "version": VERSION,
        "layer": layer,
        "collection": col.name if col is not None else None,
        "identity": identity_dict(identity),
        "index": asdict(index) if index is not None else None,
        "count": col.count() if col is not None else 0,
        "osprag_version": __version__,
        "chromadb_version": kb.store.client_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.write(_line(header))
    per_rev = _RevisionCounts()
    try:
        chunks, documents, incomplete = _write_records(kb, layer, col, out, per_rev)
    finally:
        per_rev.close()
    out.write(_line({"type": "trailer", "chunks": chunks, "documents": documents}))
    return ExportReport(
        layer=layer,
        path="",
        chunks=chunks,
        documents=documents,
        bytes=0,
        seconds=time.perf_counter() - started,
        incomplete_documents=incomplete,
    )


def _write_records(
    kb: KnowledgeBase,
    layer: str,
    col: Collection | None,
    out: IO[bytes],
    per_rev: _RevisionCounts,
) -> tuple[int, int, list[str]]:
    chunks = documents = 0
    if col is not None:
        for page in iter_chunks(col):
            seen: Counter[tuple[str, str]] = Counter()
            for rid, doc, meta, vec in zip(
                page["ids"], page["documents"], page["metadatas"], page["embeddings"], strict=True
            ):
                meta = dict(meta or {})
                out.write(
                    _line(
                        {
                            "type": "chunk",
                            "id": rid,
                            "document": doc,
                            "metadata": meta,
                            "embedding": encode_vector(vec),
                        }
                    )
                )
                if "osp_doc" in meta:
                    seen[(str(meta["osp_doc"]), str(meta.get("osp_rev")))] += 1
                chunks += 1
            per_rev.add(seen)
    incomplete = []
    for page in iter_documents(kb, layer):
        for rid, doc, meta in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
            meta = dict(meta or {})
            out.write(_line({"type": "document", "id": rid, "document": doc, "metadata": meta}))
            documents += 1
            if "rev" in meta and "chunks" in meta:
                if per_rev.get(rid, str(meta["rev"])) != int(meta["chunks"]):
                    incomplete.append(rid)
    return chunks, documents, incomplete


def export_layer(kb: KnowledgeBase, layer: str, path: Path) -> ExportReport:
    """Export a layer to ``path`` (gzip when it ends in .gz), written atomically with mode 0600
    (the file holds the documents in plain text)."""
    kb.settings.layer(layer)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            stream: IO[bytes] = (
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)  # type: ignore[assignment]
                if path.suffix == ".gz"
                else raw
            )
            report = write_layer(kb, layer, stream)
            if stream is not raw:
                stream.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report.path = str(path)
    report.bytes = path.stat().st_size
    return report


# ------------------------------------------------------------------ reading


@dataclass
class Header:
    layer: str
    collection: str | None
    identity: ModelIdentity | None
    index: IndexConfig | None
    count: int
    raw: dict[str, Any]


@dataclass
class Batch:
    kind: str  # "chunk" or "document"
    ids: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    embeddings: list[np.ndarray[Any, np.dtype[np.float32]]] = field(default_factory=list)


def _open(path: Path) -> Any:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the wrapper
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


class LayerFile:
    """A validated reader: ``scan()`` checks every line and the trailer in one streaming pass;
    ``batches()`` then yields chunk batches followed by document batches."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or str(path)
        if not self.path.is_file():
            raise InvalidInput(f"{self.name}: no such file")
        self.header = self._read_header()
        self.chunks = 0
        self.documents = 0
        self.dimension: int | None = None

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            with _open(self.path) as fh:
                for n, raw in enumerate(_bounded_lines(fh), start=1):
                    if not raw.strip():
                        continue
                    try:
                        obj = json.loads(raw)
                    except (ValueError, UnicodeDecodeError) as exc:
                        raise ExportInvalid(f"{self.name} line {n}: not JSON ({exc})") from None
                    if not isinstance(obj, dict):
                        raise ExportInvalid(f"{self.name} line {n}: not a JSON object")
                    yield n, obj
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            if isinstance(exc, OspragError):
                raise
            raise ExportInvalid(f"{self.name}: unreadable ({exc})") from None

    def _read_header(self) -> Header:
        for _n, obj in self._lines():
            if obj.get("type") != "header" or obj.get("format") != FORMAT:
                raise ExportInvalid(
                    f"{self.name}: first line is not an osprag export header",
                    hint="export files come from `osp export` or `osp backup create`",
                )
            if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
                raise ExportInvalid(
                    f"{self.name}: export format version {obj.get('version')!r} is not "
                    f"supported (this osprag reads <= {VERSION})",
                    hint="upgrade osprag",
                )
            layer = obj.get("layer")
            if not isinstance(layer, str) or not layer:
                raise ExportInvalid(f"{self.name}: header has no layer")
            count = obj.get("count", 0)
            return Header(
                layer=layer,
                collection=obj.get("collection"),
                identity=identity_from(obj.get("identity"), self.name),
                index=index_from(obj.get("index")),
                count=int(count) if isinstance(count, int) else 0,
                raw=obj,
            )
        raise ExportInvalid(f"{self.name}: file is empty")

    def scan(self) -> LayerFile:
        """Validate every record before anything is written (a bad line → nothing stored)."""
        chunks = documents = 0
        trailer: dict[str, Any] | None = None
        dim = self.header.identity.dimension if self.header.identity else None
        for n, obj in self._lines():
            kind = obj.get("type")
            where = f"{self.name} line {n}"
            if trailer is not None:
                raise ExportInvalid(f"{where}: data after the trailer")
            if kind == "header":
                if n != 1:
                    raise ExportInvalid(f"{where}: second header")
                continue
            if kind == "trailer":
                trailer = obj
                continue
            if kind not in ("chunk", "document"):
                raise ExportInvalid(f"{where}: unknown record type {kind!r}")
            if kind == "chunk" and documents:
                raise ExportInvalid(f"{where}: chunk after document records")
            _check_record(obj, where)
            if kind == "chunk":
                vec = decode_vector(obj.get("embedding"), where)
                if dim is None:
                    dim = len(vec)
                if len(vec) != dim:
                    raise ExportInvalid(f"{where}: embedding has {len(vec)} dimensions, not {dim}")
                if not np.all(np.isfinite(vec)):
                    raise ExportInvalid(f"{where}: embedding has NaN or infinite values")
                chunks += 1
            else:
                if obj["metadata"].get("layer") != self.header.layer:
                    raise ExportInvalid(f"{where}: document record of another layer")
                documents += 1
        if trailer is None:
            raise ExportInvalid(
                f"{self.name}: no trailer — the file is truncated",
                hint="export it again; nothing was imported",
            )
        if trailer.get("chunks") != chunks or trailer.get("documents") != documents:
            raise ExportInvalid(
                f"{self.name}: trailer says {trailer.get('chunks')} chunks and "
                f"{trailer.get('documents')} documents, file has {chunks} and {documents}"
            )
        self.chunks, self.documents, self.dimension = chunks, documents, dim
        return self

    def batches(self, size: int = PAGE) -> Iterator[Batch]:
        batch = Batch("chunk")
        for _n, obj in self._lines():
            kind = obj.get("type")
            if kind not in ("chunk", "document"):
                continue
            if kind != batch.kind or len(batch.ids) >= size:
                if batch.ids:
                    yield batch
                batch = Batch(kind)
            batch.ids.append(obj["id"])
            batch.documents.append(obj.get("document") or "")
            batch.metadatas.append(dict(obj.get("metadata") or {}))
            if kind == "chunk":
                batch.embeddings.append(decode_vector(obj["embedding"], self.name))
        if batch.ids:
            yield batch


def _bounded_lines(fh: Any) -> Iterator[bytes]:
    while True:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            raise ExportInvalid(f"a record is longer than {MAX_LINE} bytes")
        yield line


def _check_record(obj: dict[str, Any], where: str) -> None:
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise ExportInvalid(f"{where}: id must be a non-empty string")
    doc = obj.get("document")
    if doc is not None and not isinstance(doc, str):
        raise ExportInvalid(f"{where}: document must be a string")
    meta = obj.get("metadata")
    if meta is None:
        obj["metadata"] = {}
        return
    if not isinstance(meta, dict):
        raise ExportInvalid(f"{where}: metadata must be an object")
    for key, value in meta.items():
        scalar = isinstance(value, str | int | float | bool)
        listed = isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)
        if not (scalar or listed):
            raise ExportInvalid(f"{where}: metadata {key!r} has an unsupported value")
