"""``osp repair LAYER``: rebuild a layer whose vector index is torn or missing.

Chroma keeps ids, texts and metadata in SQLite and the vectors in the HNSW segment; a torn
segment loses (or makes unreadable) the vectors only. Repair reads every record without its
vector, finds the vector in (1) the embedding cache (keyed by the layer's model identity and
the exact text the model saw), then (2) the newest verified backup that has the record with
the same text, then (3) — with ``reembed`` and only when the configured model is the layer's —
by embedding the text again. It builds a new collection aside and flips the alias (new epoch)
only when every record was recovered, or when the caller accepts the listed losses.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osprag.embed_cache import EmbeddingCache
from osprag.embedding import ModelIdentity
from osprag.errors import BackupInvalid, ConfigError, LayerNotFound, StoreError
from osprag.ids import text_sha256
from osprag.knowledge_base import KnowledgeBase
from osprag.ops import archive, swap
from osprag.ops.backup import backup_dir, list_backups
from osprag.ops.transfer import PAGE, LayerFile

Progress = Any


@dataclass
class RepairReport:
    layer: str
    records: int
    from_cache: int = 0
    from_backup: int = 0
    reembedded: int = 0
    lost: list[str] = field(default_factory=list)
    backup: str | None = None
    flipped: bool = False
    collection: str | None = None
    epoch: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lost_count"] = len(self.lost)
        data["lost"] = self.lost[:100]
        return data


class _BackupVectors:
    """The newest verified backup's vectors of one layer, indexed on disk by id (SQLite)."""

    def __init__(self, kb: KnowledgeBase, layer: str, key: bytes | None, work: Path) -> None:
        self.name: str | None = None
        self._db = sqlite3.connect(str(work / "vectors.sqlite"))
        self._db.execute("CREATE TABLE v (id TEXT PRIMARY KEY, sha TEXT, vec BLOB)")
        for info in list_backups(kb.settings):
            if not info.counts.get(layer) or (info.encrypted and key is None):
                continue
            dest = work / "x"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            try:
                extracted = archive.read_archive(Path(info.path), dest, key)
                lf = LayerFile(extracted.layer_file(layer)).scan()
            except (BackupInvalid, OSError):
                continue  # damaged or not decryptable: try the next older one
            for batch in lf.batches():
                if batch.kind != "chunk":
                    continue
                self._db.executemany(
                    "INSERT OR REPLACE INTO v VALUES (?, ?, ?)",
                    [
                        (rid, text_sha256(doc), vec.astype("<f4").tobytes())
                        for rid, doc, vec in zip(
                            batch.ids, batch.documents, batch.embeddings, strict=True
                        )
                    ],
                )
            self._db.commit()
            shutil.rmtree(dest, ignore_errors=True)
            self.name = info.path
            return

    def get(self, ids: list[str], docs: list[str]) -> dict[str, np.ndarray[Any, Any]]:
        if self.name is None:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f"SELECT id, sha, vec FROM v WHERE id IN ({marks})", ids)
        want = {rid: text_sha256(doc) for rid, doc in zip(ids, docs, strict=True)}
        return {
            rid: np.frombuffer(blob, dtype="<f4").astype(np.float32)
            for rid, sha, blob in rows.fetchall()
            if want.get(rid) == sha  # the text changed since that backup: not its vector
        }

    def close(self) -> None:
        self._db.close()


def repair_layer(
    kb: KnowledgeBase,
    layer: str,
    *,
    key: bytes | None = None,
    reembed: bool = False,
    accept_loss: bool = False,
    progress: Progress = None,
) -> RepairReport:
    """Rebuild ``layer`` into a new collection from recovered vectors; see the module doc."""
    kb._require_writable()
    started = time.perf_counter()
    col = kb.collection_for(layer)
    if col is None:
        raise LayerNotFound(f"layer {layer!r} has no collection to repair")
    identity = ModelIdentity.from_metadata(col.metadata)
    if identity is None:
        raise ConfigError(f"collection {col.name} carries no model identity; cannot repair")
    can_embed = reembed and not kb.embedder.identity.differences(identity)
    if reembed and not can_embed:
        raise ConfigError(
            f"--reembed needs the layer's model {identity.name} to be the configured one",
            hint=f"set OSP_EMBEDDING_MODEL={identity.name}",
        )
    swap.collect_orphans(kb)
    total = col.count()
    report = RepairReport(layer=layer, records=total)
    cache_path = kb.settings.effective_cache_dir / "embeddings.sqlite"
    cache = EmbeddingCache(cache_path) if cache_path.is_file() else None
    work = Path(tempfile.mkdtemp(prefix=".repair-", dir=_scratch(kb)))
    new = swap.create_layer_collection(kb, layer, identity, col.index_config())
    backup: _BackupVectors | None = None
    try:
        offset = 0
        while offset < total:
            page = col.get(limit=PAGE, offset=offset, include=["documents", "metadatas"])
            ids = list(page["ids"])
            if not ids:
                break
            docs = [d or "" for d in page["documents"]]
            vectors: dict[str, np.ndarray[Any, Any]] = {}
            if cache is not None:
                keys = {
                    rid: text_sha256(identity.passage_prefix + d)
                    for rid, d in zip(ids, docs, strict=True)
                }
                found = cache.get_many(identity.key, list(set(keys.values())), identity.dimension)
                vectors = {rid: found[k] for rid, k in keys.items() if k in found}
                report.from_cache += len(vectors)
            rest = [i for i, rid in enumerate(ids) if rid not in vectors]
            if rest:
                if backup is None:
                    backup = _BackupVectors(kb, layer, key, work)
                    report.backup = backup.name
                got = backup.get([ids[i] for i in rest], [docs[i] for i in rest])
                vectors.update(got)
                report.from_backup += len(got)
            rest = [i for i, rid in enumerate(ids) if rid not in vectors]
            if rest and can_embed:
                fresh = kb.embedder.embed_documents([docs[i] for i in rest])
                for i, vec in zip(rest, fresh, strict=True):
                    vectors[ids[i]] = vec
                report.reembedded += len(rest)
            keep = [i for i, rid in enumerate(ids) if rid in vectors]
            report.lost.extend(rid for rid in ids if rid not in vectors)
            if keep:
                new.write(
                    "upsert",
                    [ids[i] for i in keep],
                    np.vstack([vectors[ids[i]] for i in keep]).astype(np.float32).tolist(),
                    [docs[i] for i in keep],
                    [dict(page["metadatas"][i] or {}) for i in keep],
                )
            offset += len(ids)
            if progress is not None:
                progress(len(ids))
        if report.lost and not accept_loss:
            raise StoreError(
                f"layer {layer!r}: {len(report.lost)} of {total} vectors cannot be recovered "
                f"(e.g. {', '.join(report.lost[:3])}); nothing was changed",
                hint="pass --reembed to embed them again (same model), or --accept-loss to "
                "rebuild without them",
            )
    except BaseException:
        swap.drop_quietly(kb.store, [new.name])
        raise
    finally:
        if backup is not None:
            backup.close()
        if cache is not None:
            cache.close()
        shutil.rmtree(work, ignore_errors=True)
    kb.lexical.clear(layer)  # rebuilt below, or by the next query if killed first
    report.epoch = swap.flip(kb.store, {layer: new.name})
    report.flipped, report.collection = True, new.name
    kb._cols.pop(layer, None)
    swap.drop_quietly(kb.store, [col.name])
    kb.rebuild_lexical([layer])
    report.seconds = time.perf_counter() - started
    return report


def _scratch(kb: KnowledgeBase) -> Path:
    folder = backup_dir(kb.settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder
