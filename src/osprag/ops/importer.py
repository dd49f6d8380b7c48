"""Import of layer files: merge by id, or replace whole layers atomically (restore uses this).

Merge upserts records and clears metadata keys the file does not carry (Chroma's upsert merges
metadata), so importing a file twice leaves the same state. Replace fills new collections
aside and flips them in with the document registry and a new epoch (``swap.flip``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osprag.errors import EmbeddingMismatch, InvalidInput, StoreError
from osprag.failpoints import failpoint
from osprag.knowledge_base import KnowledgeBase
from osprag.ops import swap
from osprag.ops.transfer import PAGE, Batch, LayerFile
from osprag.store import Collection

Progress = Callable[[int], None]


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
            # a merge writes into the live layer: other processes learn of it from the log
            kb.record_write(lf.header.layer, "upsert", batch.ids)
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
            identity = lf.header.identity
            if redo[layer] or identity is None:
                identity = kb.embedder.identity
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
    # Emptied before the flip: killed anywhere from here on, the lexical index disagrees with
    # Chroma's count (old or new) and the next query rebuilds it; it never serves a mix.
    for layer in layers:
        kb.lexical.clear(layer)
    epoch = swap.flip(kb.store, aliases, documents=docs.name)
    failpoint(f"{failpoint_prefix}_after_flip")
    kb.store.forget_handles()
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
