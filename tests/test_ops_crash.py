"""Restore killed at failpoints and by SIGKILL leaves the old state or the new one, never a mix;
a backup taken while an ingest writes holds every acknowledged write and no partial document."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from osprag import KnowledgeBase, Settings
from osprag.embedding import Embedder
from osprag.failpoints import EXIT_CODE
from osprag.ops import swap
from osprag.ops.backup import create_backup, restore_backup

from .conftest import base_settings
from .test_ops_backup import TEXTS, fill, same, small_corpus, snapshot


def _matches(a: dict[str, Any], b: dict[str, Any]) -> bool:
    try:
        same(a, b, "cosine")
    except AssertionError:
        return False
    return True


def _complete_documents(kb: KnowledgeBase, layer: str) -> None:
    """Every document pointer has exactly its revision's chunks."""
    col = kb.collection_for(layer)
    docs = kb.store.documents().get(where={"layer": layer}, include=["metadatas"])
    for rid, meta in zip(docs["ids"], docs["metadatas"], strict=True):
        if "rev" not in meta:
            continue
        assert col is not None
        got = col.get(where={"$and": [{"osp_doc": rid}, {"osp_rev": meta["rev"]}]}, include=[])
        assert len(got["ids"]) == meta["chunks"], meta["source"]


@pytest.fixture
def two_states(tmp_path: Path, embedder: Embedder) -> dict[str, Any]:
    """An embedded store in state B, and an archive of its earlier state A."""
    s = base_settings(tmp_path, storage="embedded")
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        fill(kb, tmp_path)
        state_a = snapshot(kb)
        archive = Path(create_backup(kb).path)
        kb.delete("kern", ids=["t0", "t1", "t2"])
        kb.add("kern", ["Neuer Text nach dem Backup"], ids=["new"])
        kb.drop_layer("erweitert", yes=True)
        state_b = snapshot(kb)
    return {"settings": s, "archive": archive, "a": state_a, "b": state_b}


def _restore_cmd(archive: Path, s: Settings, failpoints: str | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    env.update(
        PYTHONPATH=str(Path(__file__).parents[1] / "src"),
        OSP_DATA_DIR=str(s.data_dir),
        OSP_CACHE_DIR=str(s.cache_dir),
        OSP_BACKUP_DIR=str(s.backup_dir),
        OSP_EMBEDDING_BACKEND="torch",
        HF_HUB_OFFLINE="1",
    )
    if failpoints:
        env["OSP_FAILPOINTS"] = failpoints
    code = "from osprag.cli import run; run()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "-q", "backup", "restore", str(archive), "--yes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _state(s: Settings, embedder: Embedder) -> dict[str, Any]:
    """The store's state; the lexical leg must agree with it (never the other state's)."""
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        state = snapshot(kb)
        for layer in ("kern", "erweitert"):
            ids = {r[0] for r in state[layer] or []}
            hits = kb.lexical_for([layer]).search("Crimphöhe Lieferant Text", layers=[layer], k=50)
            assert {h.id for h in hits} <= ids
            assert kb.lexical.count(layer) == len(ids)
        return state


def test_restore_killed_leaves_old_or_new(two_states: dict[str, Any], embedder: Embedder) -> None:
    s, archive = two_states["settings"], two_states["archive"]
    expected = {
        "restore_write:2": "b",
        "restore_before_flip": "b",
        "restore_after_flip": "a",
    }
    for point, which in expected.items():
        proc = _restore_cmd(archive, s, point)
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == EXIT_CODE, err
        state = _state(s, embedder)
        assert _matches(state, two_states[which]), point
        if which == "a":  # put B back for the next round
            with KnowledgeBase.open(s, embedder=embedder) as kb:
                pre = max(
                    Path(str(s.backup_dir)).glob("*pre-restore*.tar.gz"), key=os.path.getmtime
                )
                restore_backup(kb, pre, pre_backup=False)
            assert _matches(_state(s, embedder), two_states["b"])
    # SIGKILL at random moments
    rng = random.Random(11)
    for _ in range(2):
        proc = _restore_cmd(archive, s, None)
        time.sleep(rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        state = _state(s, embedder)
        assert _matches(state, two_states["a"]) or _matches(state, two_states["b"])
    # a clean run converges to A and collects every leftover
    proc = _restore_cmd(archive, s, None)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        assert _matches(snapshot(kb), two_states["a"])
        assert swap.orphans(kb) == []
        _complete_documents(kb, "erweitert")


def test_backup_during_ingest_is_consistent(
    storage: str, tmp_path: Path, embedder: Embedder, request: pytest.FixtureRequest
) -> None:
    """Embedded: the backup waits for the writer's lock, so it holds everything the ingest
    acknowledged. Server: an ingest runs in parallel; no document in the archive is partial."""
    if storage == "embedded":
        s = base_settings(tmp_path, storage="embedded", lock_timeout=120)
    else:
        s = base_settings(
            tmp_path,
            storage="server",
            chroma_url=request.getfixturevalue("chroma_url"),
            chroma_database=f"t_{uuid.uuid4().hex[:12]}",
        )
    corpus = small_corpus(tmp_path)
    writer = KnowledgeBase.open(s, embedder=embedder)
    writer.add("kern", TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])
    acknowledged = set(f"t{i}" for i in range(len(TEXTS)))
    started = threading.Event()

    def ingest() -> None:
        started.set()
        writer.ingest([corpus], "erweitert")
        writer.close()  # releases the lock (embedded)

    thread = threading.Thread(target=ingest)
    thread.start()
    started.wait()
    time.sleep(0.2)
    backup_kb = KnowledgeBase.open(s, embedder=embedder)  # waits for the lock in embedded mode
    try:
        info = create_backup(backup_kb)
    finally:
        backup_kb.close()
    thread.join(120)
    target = base_settings(tmp_path / "restored", storage="embedded")
    with KnowledgeBase.open(target, embedder=embedder) as kb:
        restore_backup(kb, Path(info.path), pre_backup=False)
        assert acknowledged <= {r.id for r in kb.get("kern", limit=1000)}
        _complete_documents(kb, "erweitert")
        if storage == "embedded":
            # the whole ingest finished first: 3 documents and the synced root's marker
            assert info.documents["erweitert"] == 4
