"""osprag: two-layer document retrieval for quality-management knowledge, on ChromaDB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import LayerConfig, Settings, load_settings
from .errors import (
    AccessDenied,
    BackupInvalid,
    ConfigError,
    DimensionMismatch,
    DuplicateId,
    EmbeddingError,
    EmbeddingMismatch,
    ExportInvalid,
    InvalidFilter,
    InvalidInput,
    InvalidMetadata,
    LayerNotFound,
    LLMError,
    LLMUnavailable,
    ModelNotFound,
    NotFound,
    NotWritable,
    OspragError,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from .principal import LOCAL, Principal
from .results import Hit, LayerStats, QueryResult, Record, ReindexReport, WriteResult

if TYPE_CHECKING:
    from .client import RemoteKnowledgeBase
    from .embedding import Embedder, ModelIdentity
    from .knowledge_base import KnowledgeBase

# Imported on first use: they pull numpy (and the store), which `osp ingest` on an unchanged
# folder never needs (ingest/noop.py).
_LAZY = {
    "Embedder": "embedding",
    "ModelIdentity": "embedding",
    "KnowledgeBase": "knowledge_base",
    "RemoteKnowledgeBase": "client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "BackupInvalid",
    "ConfigError",
    "DimensionMismatch",
    "DuplicateId",
    "Embedder",
    "EmbeddingError",
    "EmbeddingMismatch",
    "ExportInvalid",
    "Hit",
    "InvalidFilter",
    "InvalidInput",
    "InvalidMetadata",
    "KnowledgeBase",
    "LLMError",
    "LLMUnavailable",
    "LOCAL",
    "LayerConfig",
    "LayerNotFound",
    "LayerStats",
    "ModelIdentity",
    "ModelNotFound",
    "NotFound",
    "NotWritable",
    "OspragError",
    "Principal",
    "QueryResult",
    "Record",
    "ReindexReport",
    "RemoteKnowledgeBase",
    "Settings",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "WriteResult",
    "__version__",
    "load_settings",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
