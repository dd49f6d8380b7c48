"""Optional cross-encoder reranking of the fused top hits (``OSP_RERANK_MODEL``).

A cross-encoder reads query and passage together, so it can see what two independent vectors
miss, at the price of one model call per (query, hit) pair: it only reorders the best
``rerank_depth`` hits of the fused ranking. The model comes by local path or from the offline
Hugging Face cache, never downloaded. The calibrated ``relevance`` stays the retrieval
calibration (a cross-encoder's logits are model-specific); ``explain`` shows the rerank score.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from osprag.errors import ModelNotFound
from osprag.results import Hit

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_cross_encoder(model: str) -> Any:
    """A sentence-transformers CrossEncoder, loaded once per process."""
    with _LOCK:
        found = _MODELS.get(model)
        if found is None:
            try:
                from sentence_transformers import CrossEncoder
            except ImportError as exc:  # pragma: no cover - dependency missing
                raise ModelNotFound(f"reranking needs sentence-transformers: {exc}") from None
            path = Path(model).expanduser()
            try:
                found = CrossEncoder(
                    str(path) if path.is_dir() else model, device="cpu", local_files_only=True
                )
            except Exception as exc:
                raise ModelNotFound(
                    f"cross-encoder {model!r} cannot be loaded offline: {exc}",
                    hint="set OSP_RERANK_MODEL to a local model folder, or unset it",
                ) from None
            _MODELS[model] = found
    return found


def rerank(
    model: str,
    query: str,
    hits: Sequence[Hit],
    texts: Mapping[tuple[str, str], str | None],
    depth: int,
) -> list[Hit]:
    """The first ``depth`` hits reordered by the cross-encoder; the rest keep their order."""
    head, tail = list(hits[:depth]), list(hits[depth:])
    if len(head) < 2:
        return list(hits)
    encoder = load_cross_encoder(model)
    pairs = [(query, texts.get((h.layer, h.id)) or "") for h in head]
    scores = [float(s) for s in encoder.predict(pairs, show_progress_bar=False)]
    for hit, score in zip(head, scores, strict=True):
        if hit.explain is not None:
            hit.explain["rerank"] = score
    order = sorted(range(len(head)), key=lambda i: (-scores[i], i))
    return [head[i] for i in order] + tail
