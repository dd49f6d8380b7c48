"""osp doctor: a healthy store passes; a torn or missing HNSW segment, a model mismatch, a
lexical index out of sync and a missing backup are named with a remedy; exit 1 on failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from osprag import KnowledgeBase, Settings
from osprag.cli import cli
from osprag.embedding import Embedder
from osprag.ops.backup import create_backup
from osprag.ops.doctor import DoctorReport, run_doctor

from .conftest import base_settings


def _status(report: DoctorReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_healthy_store(kb: KnowledgeBase, settings: Settings, embedder: Embedder) -> None:
    kb.add("kern", ["Crimphöhe prüfen", "Auszugskraft messen"], ids=["a", "b"])
    kb.rebuild_lexical(["kern"])
    report = run_doctor(lambda: settings, embedder_factory=lambda s: embedder)
    status = _status(report)
    assert status["backup"] == "warn"  # none yet
    assert status["layer:erweitert"] == "warn"  # empty
    for name in ("settings", "chroma", "model", "layer:kern", "index:kern", "lexical:kern"):
        assert status[name] == "ok", (name, report.to_dict())
    if settings.effective_storage == "embedded":
        assert status["sqlite"] == "ok" and status["data_dir"] == "ok"
        assert "pid" in next(c.detail for c in report.checks if c.name == "data_dir")
    assert report.exit_code == 0
    create_backup(kb)
    kb.add("kern", ["noch einer"], ids=["c"])
    kb.lexical.delete("kern", ["c"])  # lexical leg behind Chroma
    report = run_doctor(lambda: settings, embedder_factory=lambda s: embedder)
    status = _status(report)
    assert status["backup"] == "ok"
    assert status["lexical:kern"] == "warn"
    assert "reindex --lexical" in next(c.remedy for c in report.checks if c.name == "lexical:kern")


def test_model_mismatch_fails(kb: KnowledgeBase, settings: Settings, embedder: Embedder) -> None:
    kb.add("kern", ["Crimphöhe prüfen"], ids=["a"])

    class Other:
        identity = replace(embedder.identity, name="example/other", dimension=768)

    report = run_doctor(lambda: settings, embedder_factory=lambda s: Other())
    check = next(c for c in report.checks if c.name == "layer:kern")
    assert check.status == "fail" and "768" in check.detail and "reindex" in check.remedy
    assert report.exit_code == 1


@pytest.fixture(scope="module")
def flushed_store(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """An embedded store whose kern layer has a flushed HNSW segment (> 1,000 writes)."""
    root = tmp_path_factory.mktemp("flushed")
    s = base_settings(root, storage="embedded")
    n = 1200
    vecs = np.random.default_rng(3).standard_normal((n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        kb.add(
            "kern",
            [f"Satz {i}" for i in range(n)],
            ids=[f"r{i}" for i in range(n)],
            embeddings=vecs,
        )
    return root


_CHILD = """
import dataclasses, json, sys
from osprag import KnowledgeBase, Settings
from osprag.ops.repair import repair_layer
s = Settings(**json.loads(sys.argv[1]))
from osprag.errors import OspragError
with KnowledgeBase.open(s) as kb:
    try:
        report = dataclasses.asdict(repair_layer(kb, "kern"))
    except OspragError as exc:
        report = {"error": type(exc).__name__, "message": str(exc)}
    report["count"] = kb.count("kern")
    print(json.dumps(report, default=str))
"""


def _in_subprocess(s: Settings, what: str) -> dict[str, Any]:
    assert what == "repair"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OSP_EMBEDDING_BACKEND="torch")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, s.model_dump_json(exclude_none=True)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _damaged(flushed: Path, tmp_path: Path, how: str, embedder: Embedder) -> Settings:
    root = tmp_path / how
    shutil.copytree(flushed, root)
    s = base_settings(root, storage="embedded")
    with KnowledgeBase.open(s, embedder=embedder, read_only=True) as kb:
        col = kb.collection_for("kern")
        assert col is not None
        seg = kb.store.vector_segment(col.id)
    assert seg is not None and seg["flushed_seq"] is not None
    folder = seg["folder"]
    if how == "truncated":
        data = folder / "data_level0.bin"
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        shutil.rmtree(folder)
    return s


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_torn_segment_is_detected(
    flushed_store: Path, tmp_path: Path, how: str, embedder: Embedder
) -> None:
    healthy = run_doctor(
        lambda: base_settings(flushed_store, storage="embedded"),
        embedder_factory=lambda s: embedder,
    )
    assert _status(healthy)["index:kern"] == "ok"
    s = _damaged(flushed_store, tmp_path, how, embedder)
    report = run_doctor(lambda: s, embedder_factory=lambda s: embedder)
    check = next(c for c in report.checks if c.name == "index:kern")
    assert check.status == "fail", report.to_dict()
    # a missing folder is either reported as such or, when chromadb recreated it empty on
    # open, as files that do not match the flushed element count
    assert "segment" in check.detail and ("missing" in check.detail or "expected" in check.detail)
    assert "backup restore" in check.remedy
    assert report.exit_code == 1
    # the CLI says the same, as JSON, with exit code 1
    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(s.data_dir), "doctor", "--json"],
        env={"OSP_EMBEDDING_BACKEND": "torch", "OSP_BACKUP_DIR": str(tmp_path / "b")},
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["status"] == "fail"
    assert {c["name"]: c["status"] for c in data["checks"]}["index:kern"] == "fail"


def test_invalid_settings_and_unreachable_server(tmp_path: Path) -> None:
    from osprag.config import load_settings

    report = run_doctor(lambda: load_settings(space="manhattan"))
    assert _status(report) == {"settings": "fail"} and report.exit_code == 1
    report = run_doctor(lambda: base_settings(tmp_path, chroma_url="http://127.0.0.1:9", retries=0))
    check = next(c for c in report.checks if c.name == "chroma")
    assert check.status == "fail" and "127.0.0.1:9" in check.detail and check.remedy


def test_repair_rebuilds_a_torn_layer(
    flushed_store: Path, tmp_path: Path, embedder: Embedder
) -> None:
    """Vectors of the torn segment come back from the last backup (and, for records added
    after it, from the embedding cache); missing ones are refused unless accepted."""

    root = tmp_path / "repair"
    shutil.copytree(flushed_store, root)
    s = base_settings(root, storage="embedded")
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        create_backup(kb)
        kb.add("kern", ["nach dem Backup hinzugefügt"], ids=["late"])  # cached, not backed up
        col = kb.collection_for("kern")
        assert col is not None
        want = col.get(ids=["r5", "late"], include=["embeddings"])
    s = _damaged(root.parent / "repair", tmp_path, "truncated", embedder)
    # A torn segment is repaired in a fresh process: chromadb keeps process-wide state per
    # collection id, and the copied stores of earlier tests share this one's ids.
    report = _in_subprocess(s, "repair")
    assert report["flipped"] and report["lost"] == []
    assert report["from_backup"] == 1200 and report["from_cache"] == 1
    assert report["backup"] is not None
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        got = kb.collection_for("kern").get(ids=["r5", "late"], include=["embeddings"])  # type: ignore[union-attr]
        assert np.allclose(np.asarray(got["embeddings"]), np.asarray(want["embeddings"]), atol=1e-7)
    status = _status(run_doctor(lambda: s, embedder_factory=lambda _: embedder))
    assert status["index:kern"] == "ok" and status["lexical:kern"] == "ok"
    # without backup and cache, vectors are lost: refused unless accepted
    bare = _damaged(flushed_store, tmp_path / "bare", "truncated", embedder)
    refused = _in_subprocess(bare.model_copy(update={"backup_dir": tmp_path / "none"}), "repair")
    assert refused["error"] == "StoreError" and "cannot be recovered" in refused["message"]
    assert refused["count"] == 1200  # unchanged
