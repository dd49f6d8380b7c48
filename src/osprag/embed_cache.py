"""A persistent embedding cache so unchanged text is never embedded twice.

Keyed by (model identity digest, sha256 of the exact text the model sees); vectors are raw
float32 bytes — never pickle, since the cache file sits where users can write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .embedding import Embedder, ModelIdentity, Vectors
from .generations import enable_wal
from .ids import text_sha256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '1');
"""


class EmbeddingCache:
    """SQLite file shared safely by several processes (WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        enable_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get_many(self, model: str, hashes: Sequence[str], dim: int) -> dict[str, Vectors]:
        found: dict[str, Vectors] = {}
        with self._lock:
            for start in range(0, len(hashes), 500):
                part = list(hashes[start : start + 500])
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT text_sha256, dim, vector FROM embeddings "
                    f"WHERE model = ? AND text_sha256 IN ({marks})",
                    [model, *part],
                ).fetchall()
                for key, row_dim, blob in rows:
                    if row_dim == dim and len(blob) == dim * 4:
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: Sequence[tuple[str, Vectors]]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                [
                    (model, key, int(vec.shape[0]), np.ascontiguousarray(vec, np.float32).tobytes())
                    for key, vec in items
                ],
            )

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class CachingEmbedder:
    """Wraps a backend; documents go through the cache, queries do not (latency matters more)."""

    inner: Embedder
    cache: EmbeddingCache
    hits: int = 0
    misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def identity(self) -> ModelIdentity:
        return self.inner.identity

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        ident = self.identity
        keys = [text_sha256(ident.passage_prefix + t) for t in texts]
        found = self.cache.get_many(ident.key, list(dict.fromkeys(keys)), ident.dimension)
        missing = [i for i, k in enumerate(keys) if k not in found]
        fresh: dict[str, Vectors] = {}
        if missing:
            unique: dict[str, str] = {}
            for i in missing:
                unique.setdefault(keys[i], texts[i])
            vectors = self.inner.embed_documents(list(unique.values()))
            fresh = dict(zip(unique.keys(), vectors, strict=True))
            self.cache.put_many(ident.key, list(fresh.items()))
        with self._lock:
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        out = np.zeros((len(texts), ident.dimension), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = found[key] if key in found else fresh[key]
        return out

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed_queries(texts)
