"""Atomic layer replacement: new collections are filled aside, then one registry write flips
every alias, the document-registry pointer and the generation epoch together.

Killed before that write, readers see the old state (the filled collections are orphans that
the next replacement removes); killed after it, they see the new one. Nothing in between is
visible, because readers resolve layers and the document registry only through the registry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from osprag.store import DOCUMENTS, DOCUMENTS_KEY, EPOCH_KEY, Collection, IndexConfig, Store

if TYPE_CHECKING:
    from osprag.embedding import ModelIdentity
    from osprag.knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)

_ALIAS = "alias."
_DOCS_PATTERN = re.compile(rf"^{re.escape(DOCUMENTS)}(__v\d+)?$")


def current_epoch(store: Store) -> int:
    """The store's generation epoch; absent means 0. A restore or a layer replacement starts a
    new one, so caches and derived indexes keyed by epoch never mix old and new data."""
    return store.epoch()


def flip(store: Store, aliases: Mapping[str, str | None], documents: str | None = None) -> int:
    """Point layers (``None`` = no collection) and optionally the document registry at new
    collections and bump the epoch, in one registry write. Returns the new epoch.

    This is the hook for generation-aware code: whatever keys by epoch sees the increment in
    the same write that makes the new data visible.
    """
    meta = store.registry()
    epoch = int(meta.get(EPOCH_KEY, 0)) + 1
    changes: dict[str, object] = {_ALIAS + layer: name for layer, name in aliases.items()}
    if documents is not None:
        changes[DOCUMENTS_KEY] = documents
    changes[EPOCH_KEY] = epoch
    store.update_registry(changes)
    return epoch


def unique_name(store: Store, base: str, taken: Iterable[str] = ()) -> str:
    existing = set(store.list_collections()) | set(taken)
    if base not in existing:
        return base
    n = 2
    while f"{base}__v{n}" in existing:
        n += 1
    return f"{base}__v{n}"


def create_layer_collection(
    kb: KnowledgeBase,
    layer: str,
    identity: ModelIdentity,
    index: IndexConfig | None,
    taken: Iterable[str] = (),
) -> Collection:
    """A new, unreferenced collection for ``layer`` with the given identity and index config."""
    base = kb.settings.layer(layer).collection_name(layer)
    name = unique_name(kb.store, base, taken)
    return kb.store.create_collection(
        name,
        kb._layer_metadata(layer, identity),
        index or IndexConfig.from_settings(kb.settings),
    )


def create_documents_collection(store: Store) -> Collection:
    """A new document-registry collection beside the live one (which is created first if it
    never existed, so the two can never share a name)."""
    store.documents()
    name = unique_name(store, DOCUMENTS)
    return store.create_collection(name, {"osp_schema_version": 1}, IndexConfig("l2", 16, 100, 100))


def live_documents_name(store: Store) -> str:
    return str(store.registry().get(DOCUMENTS_KEY, DOCUMENTS))


def orphans(kb: KnowledgeBase) -> list[str]:
    """Collections of configured layers or of the document registry that nothing points at:
    leftovers of an interrupted restore, import or reindex."""
    aliases = kb.store.aliases()
    live = set(aliases.values()) | {live_documents_name(kb.store)}
    patterns = [_DOCS_PATTERN] + [
        re.compile(rf"^{re.escape(cfg.collection_name(name))}(__v\d+)?$")
        for name, cfg in kb.settings.layers.items()
    ]
    return [
        n
        for n in kb.store.list_collections()
        if n not in live and any(p.match(n) for p in patterns)
    ]


def collect_orphans(kb: KnowledgeBase) -> list[str]:
    removed = []
    for name in orphans(kb):
        try:
            kb.store.delete_collection(name)
            removed.append(name)
        except Exception as exc:  # an orphan that cannot be removed now is removed next time
            log.warning("could not remove orphan collection %s: %s", name, exc)
    return removed


def drop_quietly(store: Store, names: Iterable[str]) -> None:
    for name in names:
        try:
            store.delete_collection(name)
        except Exception:
            pass  # unreferenced: the next replacement collects it
