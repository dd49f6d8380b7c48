"""Rebuild a layer into a new collection and flip its alias: killed half-way, the old layer is
intact and queryable, because nothing points at the new collection until it is complete."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import numpy as np

from .config import Settings
from .embedding import Embedder, ModelIdentity, create_embedder
from .errors import StoreError
from .knowledge_base import KnowledgeBase
from .results import ReindexReport

PAGE = 1000


def _orphans(kb: KnowledgeBase, layer: str) -> list[str]:
    """Collections of this layer that no alias points at: leftovers of an interrupted reindex."""
    base = kb.settings.layer(layer).collection_name(layer)
    pattern = re.compile(rf"^{re.escape(base)}(__v\d+)?$")
    current = kb.store.aliases().get(layer)
    return [n for n in kb.store.list_collections() if pattern.match(n) and n != current]


def reindex(
    kb: KnowledgeBase,
    *,
    model: str | None = None,
    layers: Sequence[str] | None = None,
    embedder: Embedder | None = None,
    on_start: Callable[[str, int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ReindexReport]:
    """Re-embed (new model) or rebuild (same model, new index settings) layers in place.

    After a model change the knowledge base switches to the new embedder; the caller must also
    make the new model the configured one (``OSP_EMBEDDING_MODEL``) for later processes.
    """
    kb._require_writable()
    if embedder is None:
        if model is not None:
            new_settings: Settings = kb.settings.model_copy(update={"embedding_model": model})
            embedder = create_embedder(new_settings)
        else:
            embedder = kb.embedder
    target = embedder.identity
    reports = []
    for layer in kb._layers_arg(layers):
        for orphan in _orphans(kb, layer):
            kb.store.delete_collection(orphan)
        reports.append(_reindex_layer(kb, layer, embedder, target, on_start, progress))
    kb.use_embedder(embedder)
    return reports


def _reindex_layer(
    kb: KnowledgeBase,
    layer: str,
    embedder: Embedder,
    target: ModelIdentity,
    on_start: Callable[[str, int], None] | None,
    progress: Callable[[int], None] | None,
) -> ReindexReport:
    started = time.perf_counter()
    name = kb.store.aliases().get(layer)
    old = kb.store.get_collection(name) if name else None
    total = old.count() if old else 0
    if on_start:
        on_start(layer, total)
    old_identity = ModelIdentity.from_metadata(old.metadata) if old else None
    reuse = old_identity is not None and not old_identity.differences(target)
    new = kb.create_layer_collection(layer, target)
    try:
        offset = 0
        while old is not None and offset < total:
            include = ["documents", "metadatas"] + (["embeddings"] if reuse else [])
            page = old.get(limit=PAGE, offset=offset, include=include)
            ids = page["ids"]
            if not ids:
                break
            docs = [d or "" for d in page["documents"]]
            if reuse:
                vectors = np.asarray(page["embeddings"], dtype=np.float32)
            else:
                vectors = np.asarray(embedder.embed_documents(docs), dtype=np.float32)
            new.write("add", ids, vectors.tolist(), docs, page["metadatas"], None)
            offset += len(ids)
            if progress:
                progress(len(ids))
        if new.count() != total:
            raise StoreError(
                f"reindex of {layer!r} copied {new.count()} of {total} records; alias not flipped",
                hint="the old layer is untouched; run `osp reindex` again",
            )
    except BaseException:
        try:
            kb.store.delete_collection(new.name)
        except Exception:
            pass  # an orphan is removed by the next reindex
        raise
    kb.store.set_alias(layer, new.name)
    kb._cols.pop(layer, None)
    kb.record_write(layer, "reset")  # other processes drop their handle to the old collection
    if old is not None:
        try:
            kb.store.delete_collection(old.name)
        except StoreError:
            pass  # unreferenced; cleaned up by the next reindex
    return ReindexReport(
        layer=layer,
        old_collection=old.name if old else None,
        new_collection=new.name,
        count=total,
        model=target.name,
        reembedded=not reuse,
        seconds=time.perf_counter() - started,
    )
