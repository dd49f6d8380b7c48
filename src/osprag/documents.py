"""Ingested documents as units: list, open (all chunks in order), locate the original, delete.

Chunks are what the store holds; people think in files. The document registry (one pointer per
ingested file, see ``ingest/commit.py``) names each file's current revision and access level,
so every function here checks the caller's clearance on the registry record first and again on
each chunk: a document above the caller's clearance answers exactly like one that does not exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput, NotFound
from .principal import LOCAL, Principal
from .results import Record

if TYPE_CHECKING:
    from .knowledge_base import KnowledgeBase

MAX_PAGE = 1000


@dataclass
class DocumentInfo:
    id: str
    layer: str
    source: str
    title: str
    access_level: int
    revision: str
    chunks: int
    size: int | None
    ingested_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _info(doc_id: str, meta: dict[str, Any]) -> DocumentInfo:
    return DocumentInfo(
        id=doc_id,
        layer=str(meta.get("layer", "")),
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        access_level=int(meta.get("access_level", 4)),
        revision=str(meta.get("rev", "")),
        chunks=int(meta.get("chunks", 0)),
        size=int(meta["size"]) if "size" in meta else None,
        ingested_at=float(meta["ingested_at"]) if "ingested_at" in meta else None,
    )


def list_documents(
    kb: KnowledgeBase,
    *,
    layer: str | None = None,
    limit: int = 100,
    offset: int = 0,
    principal: Principal = LOCAL,
) -> tuple[list[DocumentInfo], int]:
    """One page of documents the principal may see, sorted by layer and source, and the total."""
    if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1..{MAX_PAGE}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset must be >= 0, got {offset}")
    clauses: list[dict[str, Any]] = [{"access_level": {"$lte": principal.clearance}}]
    if layer is not None:
        kb.settings.layer(layer)
        clauses.append({"layer": layer})
    where = clauses[0] if len(clauses) == 1 else {"$and": clauses}
    res = kb.store.documents().get(where=where, include=["metadatas"])
    docs = [
        _info(rid, dict(meta or {}))
        for rid, meta in zip(res["ids"], res["metadatas"], strict=True)
        if meta and "rev" in meta and int(meta.get("access_level", 4)) <= principal.clearance
    ]
    order = {name: i for i, name in enumerate(kb.settings.ordered_layers())}
    docs.sort(key=lambda d: (order.get(d.layer, len(order)), d.source, d.id))
    return docs[offset : offset + limit], len(docs)


def _record(kb: KnowledgeBase, doc_id: str, principal: Principal) -> dict[str, Any]:
    res = kb.store.documents().get(ids=[doc_id], include=["metadatas"])
    meta = dict(res["metadatas"][0] or {}) if res["ids"] else {}
    if not meta or "rev" not in meta or int(meta.get("access_level", 4)) > principal.clearance:
        raise NotFound(f"no document {doc_id!r}", hint="list documents to see their ids")
    return meta


def get_document(
    kb: KnowledgeBase, doc_id: str, *, principal: Principal = LOCAL
) -> tuple[DocumentInfo, list[Record]]:
    """The document and its current chunks in reading order."""
    meta = _record(kb, doc_id, principal)
    info = _info(doc_id, meta)
    col = kb.collection_for(info.layer)
    if col is None:
        return info, []
    res = col.get(
        where={"$and": [{"osp_doc": doc_id}, {"osp_rev": info.revision}]},
        include=["documents", "metadatas"],
    )
    rows = []
    for rid, text, cmeta in zip(res["ids"], res["documents"], res["metadatas"], strict=True):
        cmeta = dict(cmeta or {})
        level = cmeta.get("access_level", 4)
        if not isinstance(level, int) or level > principal.clearance:
            continue  # a chunk above the registry's level (edited by hand): never shown
        rows.append(
            (
                int(cmeta.get("chunk_index", 0)),
                Record(id=rid, layer=info.layer, text=text, metadata=kb.public_metadata(cmeta)),
            )
        )
    rows.sort(key=lambda r: r[0])
    return info, [r for _, r in rows]


def document_file(
    kb: KnowledgeBase, doc_id: str, *, principal: Principal = LOCAL
) -> tuple[DocumentInfo, Path]:
    """The original file, if it is still where it was ingested from."""
    meta = _record(kb, doc_id, principal)
    root = Path(str(meta.get("root", ""))).resolve()
    path = (root / str(meta.get("source", ""))).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(
            f"the original of {doc_id!r} is no longer at {path}",
            hint="the chunks are still searchable; re-ingest the folder to refresh",
        )
    return _info(doc_id, meta), path


def delete_document(
    kb: KnowledgeBase, doc_id: str, *, principal: Principal = LOCAL
) -> DocumentInfo:
    """Remove a document: the pointer first (readers stop seeing it), then its chunks."""
    meta = _record(kb, doc_id, principal)
    info = _info(doc_id, meta)
    kb.store.documents().delete([doc_id])
    kb.record_write(info.layer, "flip")
    col = kb.collection_for(info.layer)
    if col is not None:
        ids = col.get(where={"osp_doc": doc_id}, include=[])["ids"]
        kb.delete_ids(info.layer, ids)
        info.chunks = len(ids)
    return info
