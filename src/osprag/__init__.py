"""osprag: two-layer document retrieval for quality-management knowledge, on ChromaDB."""

from .config import LayerConfig, Settings, load_settings
from .embedding import Embedder, ModelIdentity
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
    ModelNotFound,
    NotFound,
    NotWritable,
    OspragError,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from .knowledge_base import KnowledgeBase
from .principal import LOCAL, Principal
from .results import Hit, LayerStats, QueryResult, Record, ReindexReport, WriteResult

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
    "Settings",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "WriteResult",
    "__version__",
    "load_settings",
]
