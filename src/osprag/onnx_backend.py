"""ONNX runtime for sentence-transformers models: same vectors, a fraction of the latency.

torch is needed once, to export and verify; serving then needs only onnxruntime, tokenizers and
numpy, so a server process starts fast and never imports torch. An export lives in
``<model_dir>/<identity.key>/`` and only counts once its ``export.json`` (written last, after the
parity check) names the exact identity, so changed weights or settings never reuse a stale export.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings
from .embedding import (
    ModelIdentity,
    SentenceTransformerEmbedder,
    Vectors,
    _read_json,
    has_dense_head,
    read_identity,
)
from .errors import EmbeddingError, ModelNotFound

MIN_COSINE = 0.9999
"""Parity floor against torch; a module attribute so tests can force a failing export."""
MAX_NORM_DRIFT = 1e-3
"""Cosine is blind to scale, so an unnormalised-vs-normalised mismatch is caught by norms."""
OPSET = 17
FORMAT = 1
_SUPPORTED_POOLING = ("mean", "cls", "max")
_UNSUPPORTED_POOL_KEYS = (
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)

_TORCH_HINT = "use the torch backend for this model (OSP_EMBEDDING_BACKEND=torch)"
_PARITY_TEXTS = [
    "Prüfmittelüberwachung",
    "ok",
    "Kurz.",
    "Sonderfreigabe beantragen",
    "Wie oft müssen Messmittel kalibriert werden?",
    "What is a control plan?",
    "8D-Report: Ursache, Abstellmaßnahme, Wirksamkeitsprüfung.",
    "PPAP level 3 submission requirements for a new supplier part",
    "Die FMEA bewertet Bedeutung, Auftreten und Entdeckung; Maßnahmen nach Aufgabenpriorität.",
    "Reklamation: Öse außerhalb Toleranz, Sofortmaßnahme 100 % Sortierprüfung.",
    "IATF 16949 clause 8.5.1.1 control plan",
    "Straße, Übergabe, Äußerung, Maß — ÄÖÜ äöü ß",
    "Measurement system analysis: gauge R&R below 10 % is acceptable, 10-30 % conditional.",
    "Arbeitsanweisung AA-0815 Rev. C gilt ab 01.03.2025 für Linie 4 (Schweißen).",
    "Who approves deviations from the drawing?",
    "Produktaudit nach VDA 6.3 und VDA 6.5",
    "Lieferantenbewertung: Qualität 40 %, Liefertreue 30 %, Kommunikation 30 %.",
    "The first article inspection report must list every characteristic on the drawing.",
    # Both far beyond 256 tokens, so truncation is compared too.
    "Der Produktionslenkungsplan beschreibt Prüfmerkmale, Prüfmittel und Reaktionspläne. " * 20,
    "Nonconforming product is identified, segregated and dispositioned before shipment. " * 20,
]


@dataclass(frozen=True)
class ExportReport:
    """What ``osp model export`` prints: where, which model, how faithful, how long."""

    path: Path
    name: str
    min_cosine: float
    seconds: float
    reused: bool


# ---------------------------------------------------------------- runtime


class OnnxEmbedder:
    """Embedder on onnxruntime; shares its identity with the torch original it was verified on."""

    def __init__(
        self,
        directory: Path,
        identity: ModelIdentity,
        *,
        batch_size: int = 32,
        threads: int = 0,
        manifest: dict[str, Any] | None = None,
        spin: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.spin = spin
        self._identity = identity
        self.batch_size = max(1, batch_size)
        self.threads = threads
        meta = manifest if manifest is not None else _read_json(self.directory / "export.json")
        if identity.pooling not in _SUPPORTED_POOLING:
            raise EmbeddingError(f"pooling {identity.pooling!r} has no ONNX implementation")
        self._max_len = int(meta.get("max_seq_length") or identity.max_seq_length)
        self._pad_id = int(meta.get("pad_token_id") or 0)
        # A Normalize module in the model normalises on torch whatever the setting says.
        self._normalize = identity.normalize or bool(meta.get("normalize_module"))
        self._lock = threading.Lock()
        # Built on first use, so commands that never embed do not pay for them.
        self._tokenizer: Any = None
        self._session: Any = None  # threads split each operator: one text at low latency
        self._bulk: tuple[Any, ThreadPoolExecutor] | None = None  # see _bulk_session
        self._inputs: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self._identity.name!r}, {str(self.directory)!r})"

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._encode([self._identity.passage_prefix + t for t in texts], bulk=True)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode([self._identity.query_prefix + t for t in texts], bulk=False)

    def _load_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                path = self.directory / "tokenizer.json"
                self._tokenizer = _load_tokenizer(path, self._max_len)
            return self._tokenizer

    def _split_session(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = self._new_session(
                    self.threads or os.cpu_count() or 0, spin=self.spin
                )
            return self._session

    def _bulk_session(self) -> tuple[Any, ThreadPoolExecutor] | None:
        """A single-threaded session that several threads run at once, one batch each.

        For many texts this beats splitting every operator across threads: a MiniLM operator
        on ~16 x 100 tokens is too small to split without waiting at each of the graph's joins,
        and one core per batch keeps its working set in that core's cache (docs/benchmarks.md,
        ingestion). None on a single core.
        """
        workers = self.threads or os.cpu_count() or 1
        if workers < 2:
            return None
        with self._lock:
            if self._bulk is None:
                pool = ThreadPoolExecutor(workers, thread_name_prefix="osp-onnx")
                self._bulk = (self._new_session(1), pool)
            return self._bulk

    def _new_session(self, threads: int, *, spin: bool = False) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The query session's threads spin briefly between the graph's operators: a query's
        # ~100 small operators otherwise each pay a sleep and a wake-up (bench/retrieval.py,
        # sample corpus, the runs before and after this change: query embedding p50 4.2 -> 3.1
        # ms); idle threads still block after the spin. A server turns it off
        # (``embedding_spin``): there the spinning threads take the cores from the event loop
        # and the other requests (bench/http_load.py --skip-100k --no-ingest --seconds 10
        # --no-write, with and without --spin, alternated twice: in-process p50 15.4 / 15.7 ms
        # spinning vs 8.5 / 9.3 ms not). The bulk session is single-threaded: nothing to spin
        # for.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        model = str(self.directory / "model.onnx")
        try:
            session = ort.InferenceSession(model, opts, ["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelNotFound(
                f"cannot load ONNX model from {self.directory}: {exc}",
                hint="re-run `osp model export --force`",
            ) from None
        self._inputs = frozenset(i.name for i in session.get_inputs())
        return session

    def _encode(self, texts: Sequence[str], *, bulk: bool) -> Vectors:
        """Queries run on the split session (latency); documents, when there are several
        batches, on the bulk session in parallel — and on it alone once it exists, so an
        ingesting process holds one copy of the model, not two."""
        dim = self._identity.dimension
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        encodings = self._load_tokenizer().encode_batch(list(texts))
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        # A process that already answers queries (osp serve) embeds its uploads on the query
        # session too: a second session is a second copy of the model (~90 MB RSS measured,
        # bench/http_load.py) for documents that come one at a time. Its batches are smaller,
        # as the session's memory arena keeps the largest batch's activations for good
        # (server RSS after uploading the sample corpus twice: 555 -> 495 MB at 512 tokens).
        serving = self._session is not None and self._bulk is None
        budget = SERVING_BATCH_TOKENS if serving and bulk else None
        batches = _token_batches([len(encodings[i].ids) for i in order], self.batch_size, budget)
        out = np.empty((len(encodings), dim), dtype=np.float32)
        parallel = (
            self._bulk_session()
            if bulk and not serving and (len(batches) > 1 or self._bulk)
            else None
        )
        session = parallel[0] if parallel is not None else self._split_session()

        def run(span: tuple[int, int]) -> None:
            idx = order[span[0] : span[1]]
            feeds = _pad([encodings[i] for i in idx], self._pad_id)
            hidden = session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
            out[idx] = self._pool(np.asarray(hidden, dtype=np.float32), feeds["attention_mask"])

        if parallel is None or len(batches) == 1:
            for span in batches:
                run(span)
        else:
            for _ in parallel[1].map(run, batches):  # re-raises the first failure
                pass
        return out

    def _pool(self, hidden: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> Vectors:
        maskf = mask.astype(np.float32)
        if self._identity.pooling == "cls":
            pooled = hidden[:, 0]
        elif self._identity.pooling == "max":
            pooled = np.where(maskf[..., None] > 0, hidden, np.float32(-1e9)).max(axis=1)
        else:
            summed = np.matmul(maskf[:, None, :], hidden)[:, 0]
            pooled = summed / np.maximum(maskf.sum(axis=1, keepdims=True), 1e-9)
        if self._normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled, dtype=np.float32)


BATCH_TOKENS = 2048
"""Padded tokens per model call: ~16 chunks of 128 tokens, up to ``batch_size`` short texts."""
SERVING_BATCH_TOKENS = 512
"""The same for documents embedded by a process that serves queries (uploads)."""


def _token_batches(
    lengths: Sequence[int], max_texts: int, max_tokens: int | None = None
) -> list[tuple[int, int]]:
    """[start, end) spans over ascending ``lengths``: at most ``max_texts`` texts and (unless
    a single text is longer) ``max_tokens`` (``BATCH_TOKENS``) padded tokens per span."""
    budget = BATCH_TOKENS if max_tokens is None else max_tokens
    spans: list[tuple[int, int]] = []
    start = 0
    for i, n in enumerate(lengths):
        # ascending order: the newest text sets the batch's padded width
        if i > start and ((i - start + 1) * n > budget or i - start >= max_texts):
            spans.append((start, i))
            start = i
    if lengths:
        spans.append((start, len(lengths)))
    return spans


def _load_tokenizer(path: Path, max_len: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    # tokenizer.json may pin fixed padding and its own truncation (MiniLM: 128), unlike ST.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len)
    return tokenizer


def _pad(encodings: Sequence[Any], pad_id: int) -> dict[str, np.ndarray[Any, Any]]:
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = enc.attention_mask
        types[row, :n] = enc.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# ---------------------------------------------------------------- lookup


def _verified_manifest(directory: Path, identity: ModelIdentity) -> dict[str, Any] | None:
    manifest = _read_json(directory / "export.json")
    if manifest.get("format") != FORMAT or manifest.get("identity") != asdict(identity):
        return None
    files_ok = all((directory / f).is_file() for f in ("model.onnx", "tokenizer.json"))
    return manifest if files_ok else None


def load_exported(settings: Settings, folder: Path) -> OnnxEmbedder | None:
    """The verified export for this exact identity, or None to fall back to torch."""
    identity = read_identity(settings.embedding_model, folder, settings.embedding_normalize)
    directory = settings.effective_model_dir / identity.key
    if (manifest := _verified_manifest(directory, identity)) is None:
        return None
    batch, threads = settings.embedding_batch_size, settings.embedding_threads
    return OnnxEmbedder(
        directory,
        identity,
        batch_size=batch,
        threads=threads,
        manifest=manifest,
        spin=settings.embedding_spin,
    )


# ---------------------------------------------------------------- export


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def export_model(settings: Settings, folder: Path, *, force: bool = False) -> ExportReport:
    """Export, verify against torch, and only then publish the export under its identity key."""
    started = time.perf_counter()
    folder = Path(folder)
    if has_dense_head(folder):
        raise EmbeddingError(
            f"{folder} has a Dense head after pooling; the ONNX export covers only the transformer",
            hint=_TORCH_HINT,
        )
    pool_cfg = _read_json(folder / "1_Pooling" / "config.json")
    if any(pool_cfg.get(k) for k in _UNSUPPORTED_POOL_KEYS):
        raise EmbeddingError(f"{folder} uses a pooling mode ONNX cannot run", hint=_TORCH_HINT)
    identity = read_identity(settings.embedding_model, folder, settings.embedding_normalize)
    parent = settings.effective_model_dir
    target = parent / identity.key
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddingError(f"cannot create {parent}: {exc}", hint="set OSP_MODEL_DIR") from None
    with _locked(parent / ".lock"):
        # Under the lock, leftover temp dirs can only belong to exports that died.
        for stale in parent.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        existing = None if force else _verified_manifest(target, identity)
        if existing is not None:
            cos, took = float(existing.get("min_cosine", 0.0)), time.perf_counter() - started
            return ExportReport(target, identity.name, cos, took, reused=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        try:
            min_cos = _export_into(tmp, settings, folder, identity)
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the export from a server's own user
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=".tmp-old-", dir=parent))
                os.replace(target, old / "export")
            os.replace(tmp, target)
        finally:
            for leftover in parent.glob(".tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
    return ExportReport(target, identity.name, min_cos, time.perf_counter() - started, False)


def _export_into(tmp: Path, settings: Settings, folder: Path, identity: ModelIdentity) -> float:
    try:
        import onnxruntime
        import torch
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise EmbeddingError(f"exporting needs torch: {exc}", hint="pip install torch") from None
    reference = SentenceTransformerEmbedder(
        settings.embedding_model,
        folder,
        batch_size=settings.embedding_batch_size,
        normalize=settings.embedding_normalize,
        threads=settings.embedding_threads,
    )
    st_model = reference._load()
    hf_model = getattr(st_model[0], "auto_model", None)
    tokenizer = getattr(st_model, "tokenizer", None)
    if not isinstance(hf_model, torch.nn.Module) or not (folder / "tokenizer.json").is_file():
        raise EmbeddingError(
            f"{folder} is not a transformer model with a fast tokenizer (tokenizer.json)",
            hint=_TORCH_HINT,
        )
    shutil.copyfile(folder / "tokenizer.json", tmp / "tokenizer.json")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "identity": asdict(identity),
        "pooling": identity.pooling,
        "max_seq_length": int(getattr(st_model, "max_seq_length", 0) or identity.max_seq_length),
        "pad_token_id": int(getattr(tokenizer, "pad_token_id", None) or 0),
        "normalize_module": any("Normalize" in type(m).__name__ for m in st_model),
        "opset": OPSET,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }
    uses_types = "token_type_ids" in inspect.signature(hf_model.forward).parameters

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return out.last_hidden_state

    # Padded sample batch: an all-ones mask would let the tracer drop the masking branch.
    tok = _load_tokenizer(tmp / "tokenizer.json", manifest["max_seq_length"])
    feeds = _pad(tok.encode_batch(["Prüfplan Freigabe", "a"]), manifest["pad_token_id"])
    if not uses_types:
        del feeds["token_type_ids"]
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    names = list(kwargs)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    # Traced SDPA becomes MatMul/Softmax plus NaN-guarding Where/IsNaN over every attention
    # score, ~30 % slower on onnxruntime for 250-token batches than the traced eager attention.
    previous = _set_attention(hf_model, "eager")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation, tracer, opset notes: parity decides
        try:
            torch.onnx.export(
                _Wrapper(hf_model).eval(),
                (),
                str(tmp / "model.onnx"),
                kwargs=kwargs,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:
            raise EmbeddingError(f"ONNX export of {identity.name} failed: {exc}") from None
        finally:  # parity must compare against what the torch backend really runs
            _set_attention(hf_model, previous)
    min_cos, drift = _check_parity(reference, OnnxEmbedder(tmp, identity, manifest=manifest))
    manifest.update(min_cosine=min_cos, max_norm_drift=drift, parity_texts=len(_PARITY_TEXTS))
    manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (tmp / "export.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return min_cos


def _set_attention(model: Any, implementation: str | None) -> str | None:
    """Switch attention kernels, returning the previous choice so it can be restored."""
    config: Any = getattr(model, "config", None)
    previous: str | None = getattr(config, "_attn_implementation", None)
    if implementation and previous and implementation != previous:
        with suppress(Exception):  # a model that cannot switch keeps its default kernels
            if hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation(implementation)
            else:
                config._attn_implementation = implementation
    return previous


def _check_parity(
    reference: SentenceTransformerEmbedder, candidate: OnnxEmbedder
) -> tuple[float, float]:
    """Batched and single-text runs, since padding and its absence take different code paths."""
    pairs = [
        (reference.embed_documents(_PARITY_TEXTS), candidate.embed_documents(_PARITY_TEXTS)),
        *(
            (reference.embed_queries([t]), candidate.embed_queries([t]))
            for t in (_PARITY_TEXTS[4], _PARITY_TEXTS[-2])  # short; long and truncated
        ),
    ]
    worst_cos, worst_norm = 1.0, 0.0
    for want, got in pairs:
        if want.shape != got.shape:
            raise EmbeddingError(f"ONNX output shape {got.shape} differs from torch {want.shape}")
        wn, gn = np.linalg.norm(want, axis=1), np.linalg.norm(got, axis=1)
        cos = (want * got).sum(axis=1) / np.maximum(wn * gn, 1e-12)
        worst_cos = min(worst_cos, float(cos.min()))
        worst_norm = max(worst_norm, float((np.abs(wn - gn) / np.maximum(wn, 1e-12)).max()))
    if worst_cos < MIN_COSINE or worst_norm > MAX_NORM_DRIFT:
        raise EmbeddingError(
            f"ONNX export of {reference.identity.name} does not match torch "
            f"(min cosine {worst_cos:.6f}, need {MIN_COSINE}; norm drift {worst_norm:.2e})",
            hint=_TORCH_HINT,
        )
    return worst_cos, worst_norm
