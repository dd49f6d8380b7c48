"""Portable layer files: JSONL (optionally gzip) with embeddings, streamed in constant memory.

One file holds one layer::

    {"type": "header", "format": "osprag-export", "version": 1, "layer": ..., "identity": {...},
     "index": {...}, "count": N, ...}
    {"type": "chunk", "id": ..., "document": ..., "metadata": {...}, "embedding": "<base64>"}
    ...
    {"type": "document", "id": ..., "document": ..., "metadata": {...}}   (document registry)
    {"type": "trailer", "chunks": N, "documents": M}

Embeddings are base64 of little-endian float32 — exactly what Chroma stores, so an
export → import round trip is bit-for-bit (a JSON list of numbers is accepted on import too).
The document-registry records of the layer travel with its chunks: without their version
pointers, ingested chunks would be invisible after an import. The trailer makes a truncated
file detectable. Backup archives hold the same files, so there is one reader and one writer.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from osprag import __version__
from osprag.embedding import ModelIdentity
from osprag.errors import EmbeddingMismatch, ExportInvalid, InvalidInput, OspragError, StoreError
from osprag.failpoints import failpoint
from osprag.knowledge_base import KnowledgeBase
from osprag.ops import swap
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
    per_rev: dict[tuple[str, str], int] = {}
    chunks = documents = 0
    if col is not None:
        for page in iter_chunks(col):
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
                    key = (str(meta["osp_doc"]), str(meta.get("osp_rev")))
                    per_rev[key] = per_rev.get(key, 0) + 1
                chunks += 1
    incomplete = []
    for page in iter_documents(kb, layer):
        for rid, doc, meta in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
            meta = dict(meta or {})
            out.write(_line({"type": "document", "id": rid, "document": doc, "metadata": meta}))
            documents += 1
            if "rev" in meta and "chunks" in meta:
                if per_rev.get((rid, str(meta["rev"])), 0) != int(meta["chunks"]):
                    incomplete.append(rid)
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


# ------------------------------------------------------------------ import


@dataclass
class ImportReport:
    layer: str
    source: str
    mode: str  # "merge" or "replace"
    chunks: int
    documents: int
    reembedded: bool
    collection: str | None
    epoch: int | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_identity(kb: KnowledgeBase, lf: LayerFile, reembed: bool) -> bool:
    """True when the vectors must be re-embedded; refuses a mismatch unless ``reembed``."""
    if lf.chunks == 0:
        return False
    stored = lf.header.identity
    current = kb.embedder.identity
    if stored is None:
        if reembed:
            return True
        raise EmbeddingMismatch(
            f"{lf.name}: carries no embedding identity",
            hint="pass --reembed to embed its texts with the configured model",
        )
    diffs = stored.differences(current)
    if not diffs:
        return False
    if reembed:
        return True
    raise EmbeddingMismatch(
        f"{lf.name}: layer {lf.header.layer!r} was embedded with {stored.name} "
        f"(dim {stored.dimension}), the configured model is {current.name} "
        f"(dim {current.dimension}); differs in {', '.join(diffs)}",
        hint=f"set OSP_EMBEDDING_MODEL={stored.name}, or pass --reembed to re-embed the texts",
    )


def _vectors(
    kb: KnowledgeBase, batch: Batch, reembed: bool
) -> np.ndarray[Any, np.dtype[np.float32]]:
    if reembed:
        return np.asarray(kb.embedder.embed_documents(batch.documents), dtype=np.float32)
    return np.vstack(batch.embeddings).astype(np.float32, copy=False)


def _merge_metadata(col: Collection, batch: Batch) -> list[dict[str, Any]]:
    """Chroma's upsert merges metadata; an exact import clears keys the file does not carry."""
    old = col.stored_metadatas(batch.ids)
    out = []
    for rid, meta in zip(batch.ids, batch.metadatas, strict=True):
        merged: dict[str, Any] = dict(meta)
        for key in old.get(rid, {}):
            merged.setdefault(key, None)
        out.append(merged)
    return out


def fill_collection(
    kb: KnowledgeBase,
    col: Collection,
    lf: LayerFile,
    reembed: bool,
    progress: Progress | None = None,
    merge: bool = False,
    failpoint_name: str = "import_write",
) -> int:
    """Write the file's chunks into ``col`` (upsert: a repeated id converges)."""
    written = 0
    size = min(PAGE, kb.store.max_batch_size)
    for batch in lf.batches(size):
        if batch.kind != "chunk":
            continue
        vectors = _vectors(kb, batch, reembed)
        metas = _merge_metadata(col, batch) if merge else batch.metadatas
        col.write("upsert", batch.ids, vectors.tolist(), batch.documents, metas)
        if merge:
            kb.lexical.upsert(lf.header.layer, batch.ids, batch.documents, batch.metadatas)
        written += len(batch.ids)
        failpoint(failpoint_name)
        if progress is not None:
            progress(len(batch.ids))
    return written


def file_documents(lf: LayerFile) -> Iterator[Batch]:
    for batch in lf.batches():
        if batch.kind == "document":
            yield batch


def write_documents(col: Collection, batches: Iterator[Batch]) -> int:
    n = 0
    for batch in batches:
        col.write("upsert", batch.ids, [[1.0]] * len(batch.ids), batch.documents, batch.metadatas)
        n += len(batch.ids)
    return n


def copy_documents_except(kb: KnowledgeBase, target: Collection, layers: Sequence[str]) -> int:
    """Copy the live document registry's records of every layer not being replaced."""
    live = kb.store.documents()
    offset = n = 0
    where = {"layer": {"$nin": list(layers)}}
    while True:
        page = live.get(where=where, limit=PAGE, offset=offset, include=["documents", "metadatas"])
        if not page["ids"]:
            return n
        target.write(
            "upsert",
            page["ids"],
            [[1.0]] * len(page["ids"]),
            [d or "" for d in page["documents"]],
            [dict(m or {}) for m in page["metadatas"]],
        )
        offset += len(page["ids"])
        n += len(page["ids"])


def replace_layers(
    kb: KnowledgeBase,
    files: Sequence[LayerFile],
    *,
    reembed: bool = False,
    progress: Progress | None = None,
    failpoint_prefix: str = "import",
) -> tuple[int, list[ImportReport]]:
    """Replace whole layers from scanned files atomically: build aside, flip once.

    Returns the new epoch and one report per layer. The lexical index of the replaced layers
    is rebuilt from Chroma after the flip.
    """
    kb._require_writable()
    started = time.perf_counter()
    swap.collect_orphans(kb)
    layers = [lf.header.layer for lf in files]
    if len(set(layers)) != len(layers):
        raise InvalidInput(f"two files for one layer: {layers}")
    redo = {lf.header.layer: check_identity(kb, lf, reembed) for lf in files}
    created: list[str] = []
    aliases: dict[str, str | None] = {}
    counts: dict[str, int] = {}
    try:
        for lf in files:
            layer = lf.header.layer
            if lf.header.collection is None and lf.chunks == 0:
                aliases[layer] = None
                counts[layer] = 0
                continue
            identity = kb.embedder.identity if redo[layer] or lf.chunks == 0 else lf.header.identity
            assert identity is not None
            col = swap.create_layer_collection(kb, layer, identity, lf.header.index, created)
            created.append(col.name)
            counts[layer] = fill_collection(
                kb, col, lf, redo[layer], progress, failpoint_name=f"{failpoint_prefix}_write"
            )
            if col.count() != lf.chunks:
                raise StoreError(
                    f"layer {layer!r}: wrote {col.count()} of {lf.chunks} records; nothing "
                    "was switched",
                    hint="the store is unchanged; run the command again",
                )
            aliases[layer] = col.name
        docs = swap.create_documents_collection(kb.store)
        created.append(docs.name)
        copy_documents_except(kb, docs, layers)
        for lf in files:
            write_documents(docs, file_documents(lf))
        failpoint(f"{failpoint_prefix}_before_flip")
    except BaseException:
        swap.drop_quietly(kb.store, created)
        raise
    old = kb.store.aliases()
    old_docs = swap.live_documents_name(kb.store)
    epoch = swap.flip(kb.store, aliases, documents=docs.name)
    failpoint(f"{failpoint_prefix}_after_flip")
    kb.store.reset_handles()
    for layer in layers:
        kb._cols.pop(layer, None)
        kb._checked.discard(layer)
    swap.drop_quietly(
        kb.store, [old[x] for x in layers if x in old] + [n for n in [old_docs] if n != docs.name]
    )
    kb.rebuild_lexical(layers)
    seconds = time.perf_counter() - started
    reports = [
        ImportReport(
            layer=lf.header.layer,
            source=lf.name,
            mode="replace",
            chunks=counts[lf.header.layer],
            documents=lf.documents,
            reembedded=redo[lf.header.layer],
            collection=aliases[lf.header.layer],
            epoch=epoch,
            seconds=seconds,
        )
        for lf in files
    ]
    return epoch, reports


def import_file(
    kb: KnowledgeBase,
    path: Path,
    *,
    layer: str | None = None,
    replace: bool = False,
    reembed: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a layer file: merge (upsert, default) or replace the layer atomically.

    Either way importing the same file twice leaves the same state. The whole file is
    validated first, so a bad line means nothing was written.
    """
    kb._require_writable()
    lf = LayerFile(path).scan()
    target = layer or lf.header.layer
    kb.settings.layer(target)
    if target != lf.header.layer:
        lf.header.layer = target
        lf.header.raw["layer"] = target
    if replace:
        _epoch, reports = replace_layers(
            kb, [_Retarget(lf, target)], reembed=reembed, progress=progress
        )
        return reports[0]
    started = time.perf_counter()
    redo = check_identity(kb, lf, reembed)
    col = kb._collection(target, create=True)
    assert col is not None
    chunks = fill_collection(kb, col, lf, redo, progress, merge=True)
    docs = write_documents(kb.store.documents(), _retarget_docs(file_documents(lf), target))
    return ImportReport(
        layer=target,
        source=str(path),
        mode="merge",
        chunks=chunks,
        documents=docs,
        reembedded=redo,
        collection=col.name,
        epoch=None,
        seconds=time.perf_counter() - started,
    )


def _retarget_docs(batches: Iterator[Batch], layer: str) -> Iterator[Batch]:
    for batch in batches:
        for meta in batch.metadatas:
            meta["layer"] = layer
        yield batch


class _Retarget(LayerFile):
    """A scanned file imported under another layer name (document records follow)."""

    def __init__(self, inner: LayerFile, layer: str) -> None:  # noqa: D107 - no re-scan
        self.__dict__.update(inner.__dict__)
        self.header.layer = layer

    def batches(self, size: int = PAGE) -> Iterator[Batch]:
        for batch in super().batches(size):
            if batch.kind == "document":
                for meta in batch.metadatas:
                    meta["layer"] = self.header.layer
            yield batch
