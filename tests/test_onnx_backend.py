"""ONNX backend against the real bundled MiniLM: one export per module, checked against torch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import osprag
from osprag import onnx_backend
from osprag.config import Settings
from osprag.embedding import SentenceTransformerEmbedder, resolve_model_path
from osprag.errors import EmbeddingError
from osprag.onnx_backend import ExportReport, OnnxEmbedder, export_model, load_exported

MODEL = "all-MiniLM-L6-v2"

NEW_TEXTS = [
    "Wer gibt die Erstmusterprüfung frei?",
    "Größenänderung der Schweißnaht über 0,5 mm benötigt eine Sonderfreigabe.",
    "Übermäßige Streuung, äußere Einflüsse, Prüfer-Öffnungszeiten",
    "How do we escalate a customer complaint?",
    "x",
    "Reaktionsplan bei Grenzwertüberschreitung: Linie stoppen, Teile sperren, Ursache klären. "
    * 25,  # far beyond 256 tokens: exercises truncation
]


@pytest.fixture(scope="module", autouse=True)
def _no_osp_env() -> Iterator[None]:
    """Stray OSP_* variables (a server URL, another model) must not leak into these tests."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("OSP_")]:
            mp.delenv(key)
        mp.setenv("OSP_CONFIG", os.devnull)
        yield


def make_settings(model_dir: Path) -> Settings:
    return Settings(
        model_dir=model_dir,
        data_dir=model_dir / "d",
        embedding_model=MODEL,
        embedding_batch_size=4,
        embedding_normalize=True,
        embedding_threads=0,
        embedding_backend="auto",
    )


@pytest.fixture(scope="module")
def folder() -> Path:
    return resolve_model_path(MODEL)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> tuple[Settings, ExportReport]:
    settings = make_settings(tmp_path_factory.mktemp("models"))
    return settings, export_model(settings, folder)


@pytest.fixture(scope="module")
def torch_embedder(folder: Path) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(model=MODEL, folder=folder, batch_size=4)


@pytest.fixture(scope="module")
def onnx(export: tuple[Settings, ExportReport], folder: Path) -> OnnxEmbedder:
    embedder = load_exported(export[0], folder)
    assert embedder is not None
    return embedder


def test_export_report_and_files(export: tuple[Settings, ExportReport]) -> None:
    settings, report = export
    assert not report.reused
    assert report.min_cosine >= 0.9999
    assert report.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert report.path.parent == settings.effective_model_dir
    files = {p.name for p in report.path.iterdir()}
    assert files == {"model.onnx", "tokenizer.json", "export.json"}
    manifest = json.loads((report.path / "export.json").read_text())
    assert manifest["pooling"] == "mean" and manifest["max_seq_length"] == 256
    assert sorted(p.name for p in settings.effective_model_dir.iterdir()) == [
        ".lock",
        report.path.name,
    ]


def test_parity_with_torch(onnx: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder) -> None:
    for method in ("embed_documents", "embed_queries"):
        got = getattr(onnx, method)(NEW_TEXTS)
        want = getattr(torch_embedder, method)(NEW_TEXTS)
        assert got.dtype == np.float32 and got.shape == (len(NEW_TEXTS), 384)
        cos = (got * want).sum(axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
        )
        assert cos.min() >= 0.9999, cos
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_order_is_restored_after_length_sort(onnx: OnnxEmbedder) -> None:
    batch = onnx.embed_documents(NEW_TEXTS)
    singles = np.vstack([onnx.embed_documents([t]) for t in NEW_TEXTS])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_token_batches_cap_texts_and_padded_tokens() -> None:
    spans = onnx_backend._token_batches([3, 5, 100, 100, 120, 1100], max_texts=4)
    assert spans[0][0] == 0 and spans[-1][1] == 6
    assert all(a < b and b == c for (a, b), (c, _) in zip(spans, spans[1:], strict=False))
    lengths = [3, 5, 100, 100, 120, 1100]
    for a, b in spans:
        assert b - a <= 4
        assert b - a == 1 or (b - a) * lengths[b - 1] <= onnx_backend.BATCH_TOKENS
    assert spans[-1] == (5, 6)  # two such texts would pass the budget
    assert onnx_backend._token_batches([], max_texts=4) == []
    assert onnx_backend._token_batches([10] * 10, max_texts=32) == [(0, 10)]


def test_parallel_bulk_path_matches_one_session(
    onnx: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many texts run as parallel single-threaded batches; the vectors must not change."""
    texts = [f"{t} ({i})" for i in range(12) for t in NEW_TEXTS]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    parallel = onnx.embed_documents(texts)
    assert onnx._bulk is not None
    monkeypatch.setattr(onnx, "_bulk_session", lambda: None)
    serial = onnx.embed_documents(texts)
    np.testing.assert_allclose(parallel, serial, atol=1e-5)
    assert float((parallel * serial).sum(axis=1).min()) >= 0.99999


def test_identity_matches_torch_backend(
    onnx: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx.identity == torch_embedder.identity
    assert onnx.identity.key == torch_embedder.identity.key


def test_load_exported_misses(
    export: tuple[Settings, ExportReport], folder: Path, tmp_path: Path
) -> None:
    settings, _ = export
    assert load_exported(make_settings(tmp_path / "elsewhere"), folder) is None
    # MiniLM normalises inside its own pipeline (a Normalize module), so switching the setting
    # off does not change the identity: the same export applies.
    other = settings.model_copy(update={"embedding_normalize": False})
    found = load_exported(other, folder)
    assert found is not None and found.identity.normalize is True


def test_reexport_is_reused(export: tuple[Settings, ExportReport], folder: Path) -> None:
    settings, first = export
    again = export_model(settings, folder)
    assert again.reused and again.path == first.path
    assert again.min_cosine == pytest.approx(first.min_cosine)


def test_prefixes_are_applied(onnx: OnnxEmbedder) -> None:
    identity = dataclasses.replace(onnx.identity, query_prefix="query: ", passage_prefix="")
    prefixed = OnnxEmbedder(onnx.directory, identity, batch_size=8)
    text = ["Prüfmittel kalibrieren"]
    assert not np.allclose(prefixed.embed_queries(text), prefixed.embed_documents(text))
    np.testing.assert_allclose(
        prefixed.embed_queries(text), onnx.embed_queries(["query: " + text[0]]), atol=1e-6
    )


def test_empty_input(onnx: OnnxEmbedder) -> None:
    for out in (onnx.embed_documents([]), onnx.embed_queries([])):
        assert out.shape == (0, 384) and out.dtype == np.float32


def test_server_path_does_not_import_torch(
    export: tuple[Settings, ExportReport], folder: Path
) -> None:
    settings, _ = export
    script = f"""
import sys
from collections.abc import Iterator
from pathlib import Path
from osprag.config import Settings
from osprag.onnx_backend import load_exported
s = Settings(model_dir=Path({str(settings.effective_model_dir)!r}), data_dir=Path("/nonexistent"),
             embedding_model={MODEL!r}, embedding_normalize=True, embedding_backend="auto")
e = load_exported(s, Path({str(folder)!r}))
assert e is not None
v = e.embed_queries(["Wie kalibriere ich Messmittel?"])
assert v.shape == (1, 384), v.shape
bad = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
assert not bad, bad
"""
    src = str(Path(next(iter(osprag.__path__))).parent)
    env = dict(os.environ)  # OSP_* already cleared by _no_osp_env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_failed_export_leaves_nothing(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_backend, "MIN_COSINE", 1.5)  # parity can never pass
    settings = make_settings(tmp_path / "models")
    with pytest.raises(EmbeddingError, match="does not match torch"):
        export_model(settings, folder)
    assert [p.name for p in settings.effective_model_dir.iterdir()] == [".lock"]
    assert load_exported(settings, folder) is None


def test_failed_forced_export_keeps_previous(
    export: tuple[Settings, ExportReport], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, report = export
    before = (report.path / "export.json").read_text()

    def boom(*args: object, **kwargs: object) -> float:
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-export

    monkeypatch.setattr(onnx_backend, "_check_parity", boom)
    with pytest.raises(KeyboardInterrupt):
        export_model(settings, folder, force=True)
    assert (report.path / "export.json").read_text() == before
    assert sorted(p.name for p in settings.effective_model_dir.iterdir()) == [
        ".lock",
        report.path.name,
    ]


def test_dense_head_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "dense-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Dense",
                    "type": "sentence_transformers.models.Dense",
                }
            ]
        )
    )
    with pytest.raises(EmbeddingError, match="Dense"):
        export_model(make_settings(tmp_path / "models"), model)
    assert not (tmp_path / "models").exists()


def test_export_uses_eager_attention(export: tuple[Settings, ExportReport]) -> None:
    """Traced SDPA adds NaN guards over every attention score: ~30 % slower on long batches."""
    onnx_pkg = pytest.importorskip("onnx")
    graph = onnx_pkg.load(str(export[1].path / "model.onnx"), load_external_data=False).graph
    assert "IsNaN" not in {node.op_type for node in graph.node}


def test_a_serving_process_embeds_documents_on_its_query_session(
    export: tuple[Settings, ExportReport],
    folder: Path,
    onnx: OnnxEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After queries (osp serve), uploads reuse the query session: one copy of the model in
    memory, the same vectors."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    serving = load_exported(export[0], folder)
    assert serving is not None
    serving.embed_queries(["Crimphöhe"])
    texts = [f"{t} ({i})" for i in range(12) for t in NEW_TEXTS]
    vectors = serving.embed_documents(texts)
    assert serving._bulk is None
    # and in batches of at most SERVING_BATCH_TOKENS padded tokens
    spans = onnx_backend._token_batches([100] * 12, 32, onnx_backend.SERVING_BATCH_TOKENS)
    assert spans == [(0, 5), (5, 10), (10, 12)]
    np.testing.assert_allclose(vectors, onnx.embed_documents(texts), atol=1e-5)
