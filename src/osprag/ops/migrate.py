"""Move a store to another environment (data dir ↔ Chroma server, either side), resumably.

Each layer is copied page by page (ids, documents, metadata, embeddings: nothing is
re-embedded) into a new collection at the destination that nothing points at yet; a checkpoint
file records how far each layer got, so an interrupted run continues where it stopped. When
every layer is complete, the destination's registry flips all layers, its document registry
and its epoch in one write — the destination shows the old state or the migrated one, never a
mix. At the end the counts and a random sample of records (documents, metadata, vectors) are
compared between source and destination.

The source is opened as a writer: in embedded mode that takes its lock, so no ingest changes
it mid-copy; a server source must not be written to during a migration (the final count check
catches it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from osprag.config import Settings
from osprag.embedding import ModelIdentity, create_embedder
from osprag.errors import EmbeddingMismatch, InvalidInput, StoreError
from osprag.failpoints import failpoint
from osprag.knowledge_base import KnowledgeBase
from osprag.ops import swap
from osprag.ops.backup import backup_dir
from osprag.ops.importer import copy_documents_except
from osprag.ops.transfer import PAGE, iter_documents
from osprag.store import Collection


def endpoint_settings(base: Settings, spec: str) -> Settings:
    """Settings for ``spec``: a data dir path, or an http(s) URL (``?tenant=&database=``)."""
    if spec.startswith(("http://", "https://")):
        url = urlparse(spec)
        query = parse_qs(url.query)
        update: dict[str, Any] = {
            "storage": "server",
            "chroma_url": f"{url.scheme}://{url.netloc}",
        }
        if "tenant" in query:
            update["chroma_tenant"] = query["tenant"][0]
        if "database" in query:
            update["chroma_database"] = query["database"][0]
        return Settings.model_validate({**base.model_dump(), **update})
    return Settings.model_validate(
        {**base.model_dump(), "storage": "embedded", "data_dir": Path(spec), "chroma_url": None}
    )


def describe(settings: Settings) -> str:
    if settings.effective_storage == "server":
        return f"{settings.chroma_url}/{settings.chroma_tenant}/{settings.chroma_database}"
    return str(settings.data_dir.resolve())


@dataclass
class LayerResult:
    layer: str
    source_count: int
    dest_count: int
    resumed_from: int
    sampled: int
    collection: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MigrateReport:
    source: str
    dest: str
    layers: list[LayerResult] = field(default_factory=list)
    documents: int = 0
    epoch: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return data


class Checkpoint:
    """A small JSON file, rewritten atomically after every page."""

    def __init__(self, folder: Path, source: str, dest: str) -> None:
        digest = hashlib.sha256(f"{source}\n{dest}".encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / f"migrate-{digest}.json"
        self.data: dict[str, Any] = {"source": source, "dest": dest, "layers": {}}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                if loaded.get("source") == source and loaded.get("dest") == dest:
                    self.data = loaded
            except ValueError:
                pass

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def migrate(
    source: Settings,
    dest: Settings,
    *,
    layers: Sequence[str] | None = None,
    sample: int = 50,
    checkpoint_dir: Path | None = None,
    lock_timeout: float | None = None,
    on_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> MigrateReport:
    """Copy the chosen layers (default all configured) from ``source`` to ``dest``."""
    src_name, dst_name = describe(source), describe(dest)
    if src_name == dst_name:
        raise InvalidInput("source and destination are the same store")
    started = time.perf_counter()
    if lock_timeout is not None:
        source = source.model_copy(update={"lock_timeout": lock_timeout})
        dest = dest.model_copy(update={"lock_timeout": lock_timeout})
    if (
        source.effective_storage == "embedded"
        and not (source.data_dir / "chroma.sqlite3").is_file()
    ):
        raise InvalidInput(
            f"source {source.data_dir} is not a Chroma data dir (no chroma.sqlite3)",
            hint="check --from; a 0.5.x directory needs the export path in docs/operations.md",
        )
    checkpoint = Checkpoint(checkpoint_dir or backup_dir(dest), src_name, dst_name)
    report = MigrateReport(source=src_name, dest=dst_name)
    with (
        KnowledgeBase.open(source) as src,
        KnowledgeBase.open(dest) as dst,
    ):
        if not src.store.aliases():
            raise InvalidInput(
                f"source {src_name} holds no osprag layers; nothing was changed",
                hint="check --from (and its ?database= for a server)",
            )
        names = src._layers_arg(layers)
        for layer in names:
            dst.settings.layer(layer)
        configured = create_embedder(dest).identity
        plans: dict[str, tuple[Collection | None, ModelIdentity | None]] = {}
        for layer in names:
            col = src.collection_for(layer)
            identity = ModelIdentity.from_metadata(col.metadata) if col is not None else None
            if identity is not None and col is not None and col.count():
                diffs = identity.differences(configured)
                if diffs:
                    raise EmbeddingMismatch(
                        f"layer {layer!r} at the source was embedded with {identity.name}, the "
                        f"destination is configured for {configured.name} ({', '.join(diffs)})",
                        hint=f"set OSP_EMBEDDING_MODEL={identity.name}, or migrate and then "
                        "`osp reindex --model ...` at the destination",
                    )
            plans[layer] = (col, identity)
        aliases: dict[str, str | None] = {}
        for layer in names:
            col, identity = plans[layer]
            result = _copy_layer(src, dst, layer, col, identity, checkpoint, on_start, progress)
            aliases[layer] = result.collection
            report.layers.append(result)
        docs = swap.create_documents_collection(dst.store)
        try:
            copy_documents_except(dst, docs, names)
            for layer in names:
                for page in iter_documents(src, layer):
                    docs.write(
                        "upsert",
                        page["ids"],
                        [[1.0]] * len(page["ids"]),
                        [d or "" for d in page["documents"]],
                        [dict(m or {}) for m in page["metadatas"]],
                    )
                    report.documents += len(page["ids"])
            failpoint("migrate_before_flip")
        except BaseException:
            swap.drop_quietly(dst.store, [docs.name])
            raise
        old = dst.store.aliases()
        old_docs = swap.live_documents_name(dst.store)
        for layer in names:
            dst.lexical.clear(layer)  # rebuilt below, or by the next query if killed first
        report.epoch = swap.flip(dst.store, aliases, documents=docs.name)
        checkpoint.clear()
        dst.store.forget_handles()
        dst._cols.clear()
        dst._checked.clear()
        swap.drop_quietly(
            dst.store,
            [old[x] for x in names if x in old and old[x] != aliases.get(x)]
            + [n for n in [old_docs] if n != docs.name],
        )
        dst.rebuild_lexical(names)
        for result in report.layers:
            result.sampled = _verify(src, dst, result, sample)
    report.seconds = time.perf_counter() - started
    return report


def _copy_layer(
    src: KnowledgeBase,
    dst: KnowledgeBase,
    layer: str,
    col: Collection | None,
    identity: ModelIdentity | None,
    checkpoint: Checkpoint,
    on_start: Callable[[str, int, int], None] | None,
    progress: Callable[[int], None] | None,
) -> LayerResult:
    total = col.count() if col is not None else 0
    if col is None or identity is None:
        if on_start:
            on_start(layer, 0, 0)
        return LayerResult(layer, 0, 0, 0, 0, None)
    state = checkpoint.data["layers"].get(layer)
    target: Collection | None = None
    start = 0
    if state and state.get("source_collection") == col.name and state.get("source_count") == total:
        target = dst.store.get_collection(state["collection"])
        if target is not None:
            start = min(int(state.get("copied", 0)), target.count())
    if target is None:
        target = swap.create_layer_collection(dst, layer, identity, col.index_config())
        state = {"collection": target.name, "source_collection": col.name, "source_count": total}
        checkpoint.data["layers"][layer] = state
        checkpoint.save()
    assert state is not None
    if on_start:
        on_start(layer, total, start)
    offset = start
    while offset < total:
        page = col.get(limit=PAGE, offset=offset, include=["documents", "metadatas", "embeddings"])
        if not page["ids"]:
            break
        vectors = np.asarray(page["embeddings"], dtype=np.float32)
        target.write(
            "upsert",
            page["ids"],
            vectors.tolist(),
            [d or "" for d in page["documents"]],
            [dict(m or {}) for m in page["metadatas"]],
        )
        offset += len(page["ids"])
        state["copied"] = offset
        checkpoint.save()
        failpoint("migrate_page")
        if progress:
            progress(len(page["ids"]))
    have = target.count()
    if have != total or col.count() != total:
        raise StoreError(
            f"layer {layer!r}: destination has {have} records, source {col.count()} "
            f"(was {total} when the copy began)",
            hint="the source changed during the migration; stop its writers and run again "
            "(the copy resumes)",
        )
    return LayerResult(layer, total, have, start, 0, target.name)


def _verify(src: KnowledgeBase, dst: KnowledgeBase, result: LayerResult, sample: int) -> int:
    """Compare a random sample of records exactly (vectors within one float32 ulp in cosine
    space, where Chroma re-normalises on insert)."""
    a = src.collection_for(result.layer)
    b = dst.collection_for(result.layer)
    if a is None or result.source_count == 0:
        return 0
    assert b is not None
    if b.count() != a.count():
        raise StoreError(f"layer {result.layer!r}: counts differ after migration")
    rng = random.Random()
    offsets = sorted(rng.sample(range(result.source_count), min(sample, result.source_count)))
    ids = [a.get(limit=1, offset=o, include=[])["ids"][0] for o in offsets]
    inc = ["documents", "metadatas", "embeddings"]
    left, right = a.get(ids=ids, include=inc), b.get(ids=ids, include=inc)
    lmap = {i: k for k, i in enumerate(left["ids"])}
    rmap = {i: k for k, i in enumerate(right["ids"])}
    space = a.index_config() or b.index_config()
    tol = 1e-7 if space is not None and space.space == "cosine" else 0.0
    for rid in ids:
        if rid not in rmap:
            raise StoreError(f"layer {result.layer!r}: record {rid!r} is missing after migration")
        i, j = lmap[rid], rmap[rid]
        same_doc = left["documents"][i] == right["documents"][j]
        same_meta = (left["metadatas"][i] or {}) == (right["metadatas"][j] or {})
        va = np.asarray(left["embeddings"][i], dtype=np.float32)
        vb = np.asarray(right["embeddings"][j], dtype=np.float32)
        if not (same_doc and same_meta and va.shape == vb.shape and np.abs(va - vb).max() <= tol):
            raise StoreError(f"layer {result.layer!r}: record {rid!r} differs after migration")
    return len(ids)
