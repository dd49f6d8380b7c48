"""Crash safety: ingestion killed at failpoints or by SIGKILL converges, after a re-run, to
exactly what a clean ingest produces (same ids, no duplicates, no orphans, nothing mixed)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from osprag import KnowledgeBase, Settings
from osprag.embedding import Embedder
from osprag.ingest.sync import ROOT_MARKER

from .conftest import base_settings

WORDS = (
    "Crimphöhe Auszugskraft Schliffbild Werkzeugwechsel Losbeginn Prüfmittel Toleranz "
    "Kontakt Leitung Isolation Reklamation Sofortmaßnahme Ursache Wirksamkeit"
).split()


def make_corpus(root: Path, version: int, n: int = 12) -> None:
    """Version 2 changes a third of the files, deletes two and adds two."""
    rng = random.Random(7)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    names = [f"PRD_CRM_Dokument-{i:02d}.md" for i in range(n)]
    if version == 2:
        names = names[2:] + [f"QM_NEU_Dokument-{i}.md" for i in range(2)]
    for i, name in enumerate(names):
        changed = version == 2 and i % 3 == 0
        paras = []
        for s in range(3):
            words = " ".join(rng.choice(WORDS) for _ in range(50))
            paras.append(f"## Abschnitt {s}\n\n{name} Teil {s}: {words}.")
        rev = "2.0" if changed else "1.0"
        marker = "GEÄNDERT " if changed else ""
        (root / name).write_text(
            f"# {name}\n\nVersion: {rev} | Zugriff: L{1 + i % 4} | Status: AKTIV\n\n{marker}"
            + "\n\n".join(paras),
            encoding="utf-8",
        )


def state(kb: KnowledgeBase) -> dict[str, Any]:
    col = kb.collection_for("kern")
    assert col is not None
    raw = col.get(include=["documents", "metadatas"])
    skip = {"mtime", "ingested_at"}
    chunks = sorted(
        (rid, doc, tuple(sorted((k, v) for k, v in (m or {}).items() if k not in skip)))
        for rid, doc, m in zip(raw["ids"], raw["documents"], raw["metadatas"], strict=True)
    )
    docs = kb.store.documents().get(where={"layer": "kern"}, include=["metadatas"])
    registry = sorted(
        (rid, m["source"], m["sha256"], m["rev"], m["chunks"])
        for rid, m in zip(docs["ids"], docs["metadatas"], strict=True)
        if m["source"] != ROOT_MARKER
    )
    assert len({c[0] for c in chunks}) == len(chunks)
    return {"chunks": chunks, "registry": registry, "count": col.count()}


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> dict[str, Any]:
    """v1 baseline store, the clean v2 reference state, and the ONNX export for fast workers."""
    from osprag.embedding import resolve_model_path
    from osprag.onnx_backend import export_model

    base = tmp_path_factory.mktemp("crash")
    models = base / "models"
    export_model(Settings(model_dir=models), resolve_model_path("all-MiniLM-L6-v2"))
    corpus = base / "corpus"

    def settings(data: Path) -> Settings:
        return base_settings(
            base,
            data_dir=data,
            cache_dir=data / "cache",
            model_dir=models,
            embedding_backend="onnx",
        )

    make_corpus(corpus, 2)
    with KnowledgeBase.open(settings(base / "reference")) as kb:
        assert kb.ingest([corpus], "kern").exit_code == 0
        reference = state(kb)
    make_corpus(corpus, 1)
    with KnowledgeBase.open(settings(base / "v1")) as kb:
        assert kb.ingest([corpus], "kern").exit_code == 0
    shutil.rmtree(base / "v1" / "cache")  # v2's new chunks must really be embedded
    make_corpus(corpus, 2)
    return {
        "base": base,
        "corpus": corpus,
        "models": models,
        "reference": reference,
        "settings": settings,
    }


def _worker_env(
    env_data: Path, models: Path, failpoints: str | None, batch_chunks: int | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    if batch_chunks is not None:
        env["OSP_INGEST_BATCH_CHUNKS"] = str(batch_chunks)
    env.update(
        OSP_DATA_DIR=str(env_data),
        OSP_MODEL_DIR=str(models),
        OSP_EMBEDDING_BACKEND="onnx",
        OSP_CACHE_DIR=str(env_data / "cache"),
        HF_HUB_OFFLINE="1",
    )
    if failpoints:
        env["OSP_FAILPOINTS"] = failpoints
    return env


def _osp() -> str:
    return str(Path(sys.executable).parent / "osp")


def _fresh_copy(crash_env: dict[str, Any], name: str) -> Path:
    target = crash_env["base"] / name
    shutil.copytree(crash_env["base"] / "v1", target)
    return target


def _rerun_and_compare(crash_env: dict[str, Any], data: Path) -> None:
    with KnowledgeBase.open(crash_env["settings"](data)) as kb:
        report = kb.ingest([crash_env["corpus"]], "kern")
        assert report.exit_code == 0
        assert state(kb) == crash_env["reference"]


# v2 writes 6 files of 9-12 chunks: at 20 chunks per write batch that is 3 batches of 2 files
# each (the first of each pair changed, so its old chunks are collected); the default batch
# (256) writes all 6 in one.
@pytest.mark.parametrize(
    ("failpoint", "batch_chunks"),
    [
        ("after_write:1", 20),
        ("after_write:3", 20),
        ("before_flip:2", 20),
        ("after_flip:3", 20),
        ("during_collect:1", 20),
        ("after_write:1", None),
        ("during_collect:1", None),
    ],
)
def test_failpoints(crash_env: dict[str, Any], failpoint: str, batch_chunks: int | None) -> None:
    data = _fresh_copy(crash_env, f"fp-{failpoint.replace(':', '-')}-{batch_chunks}")
    proc = subprocess.run(
        [_osp(), "-q", "ingest", str(crash_env["corpus"]), "--layer", "kern"],
        env=_worker_env(data, crash_env["models"], failpoint, batch_chunks),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 86, proc.stderr  # died at the failpoint, no cleanup
    _rerun_and_compare(crash_env, data)


def test_sigkill_at_random_points(crash_env: dict[str, Any]) -> None:
    rng = random.Random(1234)
    started = time.monotonic()
    data = _fresh_copy(crash_env, "timing")
    subprocess.run(
        [_osp(), "-q", "ingest", str(crash_env["corpus"]), "--layer", "kern"],
        env=_worker_env(data, crash_env["models"], None),
        check=True,
        timeout=300,
    )
    full = time.monotonic() - started
    killed = 0
    for run in range(10):
        data = _fresh_copy(crash_env, f"kill-{run}")
        proc = subprocess.Popen(
            [_osp(), "-q", "ingest", str(crash_env["corpus"]), "--layer", "kern"],
            env=_worker_env(data, crash_env["models"], None),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.25, 1.0) * full)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(60)
        _rerun_and_compare(crash_env, data)
    assert killed >= 5  # most runs really were interrupted mid-way
