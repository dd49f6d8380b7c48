"""Layer export/import: exact round trip, idempotent, validated before writing, identity checked;
migration embedded → server → embedded, resumable after a kill."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from osprag import EmbeddingMismatch, KnowledgeBase, Settings
from osprag.embedding import Embedder
from osprag.errors import ExportInvalid, InvalidInput
from osprag.failpoints import EXIT_CODE
from osprag.ops import swap
from osprag.ops.importer import import_file
from osprag.ops.migrate import migrate
from osprag.ops.transfer import export_layer

from .conftest import base_settings
from .test_ops_backup import TEXTS, fill, same, snapshot


def test_export_import_round_trip_and_idempotent(
    kb: KnowledgeBase, tmp_path: Path, settings: Settings
) -> None:
    fill(kb, tmp_path)
    before = snapshot(kb)
    out = tmp_path / "erweitert.jsonl.gz"
    report = export_layer(kb, "erweitert", out)
    assert report.chunks == kb.count("erweitert") and report.documents >= 3
    assert report.incomplete_documents == []
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert json.loads(lines[0])["identity"]["dimension"] == 384
    assert json.loads(lines[-1]) == {
        "type": "trailer",
        "chunks": report.chunks,
        "documents": report.documents,
    }

    kb.drop_layer("erweitert", yes=True)
    first = import_file(kb, out)
    assert first.mode == "merge" and first.chunks == report.chunks
    state1 = snapshot(kb)
    same(state1, before, settings.space)
    import_file(kb, out)  # twice: same state
    same(snapshot(kb), state1, settings.space)
    # ingested chunks stay visible: their version pointers travelled with them
    assert kb.query("Lieferant", layers="erweitert", n_results=3).hits

    # replace mode: atomic, new epoch, stray records gone
    kb.add("erweitert", ["Fremdtext"], ids=["stray"])
    epoch = swap.current_epoch(kb.store)
    rep = import_file(kb, out, replace=True)
    assert rep.mode == "replace" and rep.epoch == epoch + 1
    assert not kb.lexical.loaded  # the lexical rebuild streamed rows, built no postings
    assert kb.lexical.count("erweitert") == kb.count("erweitert")
    assert kb.query("Crimpdatentabelle", layers="erweitert", mode="lexical").hits
    assert not kb.get("erweitert", ids=["stray"])
    same(snapshot(kb), state1, settings.space)
    assert swap.orphans(kb) == []

    # a document rewritten while it was exported (its pointer promises other chunks) is named
    docs = kb.store.documents()
    page = docs.get(where={"layer": "erweitert"}, include=["documents", "metadatas"])
    rid, doc, meta = next(
        (i, d, dict(m))
        for i, d, m in zip(page["ids"], page["documents"], page["metadatas"], strict=True)
        if "chunks" in m
    )
    meta["chunks"] = int(meta["chunks"]) + 1
    docs.write("upsert", [rid], [[1.0]], [doc or ""], [meta])
    again = export_layer(kb, "erweitert", tmp_path / "again.jsonl")
    assert again.incomplete_documents == [rid]


def test_bit_for_bit_in_l2_space(tmp_path: Path, embedder: Embedder) -> None:
    """Outside cosine space Chroma keeps vectors as given: the round trip is bit-exact."""
    s = base_settings(tmp_path, space="l2")
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        kb.add("kern", TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])
        before = snapshot(kb)
        export_layer(kb, "kern", tmp_path / "k.jsonl")
        kb.drop_layer("kern", yes=True)
        import_file(kb, tmp_path / "k.jsonl")
        assert snapshot(kb) == before


def test_bad_files_are_refused_before_writing(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.add("kern", TEXTS[:3], ids=["a", "b", "c"])
    good = tmp_path / "k.jsonl"
    export_layer(kb, "kern", good)
    lines = good.read_text().splitlines()
    kb.drop_layer("kern", yes=True)
    kb.add("kern", ["bleibt"], ids=["keep"])

    def bad(name: str, content: list[str]) -> Path:
        p = tmp_path / name
        p.write_text("\n".join(content) + "\n")
        return p

    cases = {
        "truncated": (lines[:-2], "truncated"),
        "junk": (lines[:2] + ["{not json"] + lines[2:], "not JSON"),
        "dim": (
            lines[:1] + [json.dumps({**json.loads(lines[1]), "embedding": [0.1, 0.2]})] + lines[2:],
            "dimensions",
        ),
        "noheader": (lines[1:], "header"),
        "count": (lines[:2] + lines[3:], "trailer says"),
    }
    for name, (content, message) in cases.items():
        with pytest.raises(ExportInvalid, match=message):
            import_file(kb, bad(f"{name}.jsonl", content))
    assert [r.id for r in kb.get("kern")] == ["keep"]
    with pytest.raises(InvalidInput, match="no such file"):
        import_file(kb, tmp_path / "missing.jsonl")


def test_identity_mismatch_needs_reembed(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.add("kern", TEXTS[:3], ids=["a", "b", "c"])
    path = tmp_path / "k.jsonl"
    export_layer(kb, "kern", path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["identity"]["weights_sha256"] = "other"
    lines[0] = json.dumps(header)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EmbeddingMismatch, match="--reembed"):
        import_file(kb, path, layer="erweitert")
    assert kb.count("erweitert") == 0
    report = import_file(kb, path, layer="erweitert", reembed=True)
    assert report.reembedded and kb.count("erweitert") == 3
    got = kb.get("erweitert", ids=["a"], include=["embeddings"])[0].embedding
    want = kb.get("kern", ids=["a"], include=["embeddings"])[0].embedding
    assert got is not None and want is not None
    assert np.allclose(got, want, atol=1e-5)  # same model re-embedded the same text


def test_migrate_embedded_server_embedded_is_exact(
    tmp_path: Path, chroma_url: str, embedder: Embedder
) -> None:
    a = base_settings(tmp_path / "a", storage="embedded")
    server = base_settings(
        tmp_path / "s",
        storage="server",
        chroma_url=chroma_url,
        chroma_database=f"t_{uuid.uuid4().hex[:12]}",
    )
    c = base_settings(tmp_path / "c", storage="embedded")
    with KnowledgeBase.open(a, embedder=embedder) as kb:
        fill(kb, tmp_path)
        before = snapshot(kb)
    report = migrate(a, server, sample=10)
    assert {r.layer: r.dest_count for r in report.layers}["kern"] == len(TEXTS)
    assert all(r.sampled == min(10, r.source_count) for r in report.layers)
    report = migrate(server, c, sample=10)
    assert report.epoch == 1
    with KnowledgeBase.open(c, embedder=embedder) as kb:
        same(snapshot(kb), before, "cosine")
        assert kb.query("Crimphöhe", n_results=3).hits
        assert kb.lexical.count("kern") == len(TEXTS)
    with pytest.raises(InvalidInput, match="not a Chroma data dir"):
        migrate(base_settings(tmp_path / "nothing"), c)


def _migrate_cli(src: Path, dst: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "from osprag.cli import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, "-q", "migrate", "--from", str(src), "--to", str(dst)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_migrate_resumes_after_kill(tmp_path: Path, embedder: Embedder) -> None:
    src = base_settings(tmp_path / "a", storage="embedded")
    with KnowledgeBase.open(src, embedder=embedder) as kb:
        n = 2500  # three pages
        vecs = np.random.default_rng(1).standard_normal((n, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        kb.add(
            "kern",
            [f"Satz {i}" for i in range(n)],
            ids=[f"r{i}" for i in range(n)],
            embeddings=vecs,
        )
    dst = tmp_path / "b" / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    env.update(
        PYTHONPATH=str(Path(__file__).parents[1] / "src"),
        OSP_EMBEDDING_BACKEND="torch",
        OSP_BACKUP_DIR=str(tmp_path / "ckpt"),
        OSP_FAILPOINTS="migrate_page:2",
        HF_HUB_OFFLINE="1",
    )
    killed = _migrate_cli(src.data_dir, dst, env)
    assert killed.returncode == EXIT_CODE, killed.stderr
    ckpt = json.loads(next((tmp_path / "ckpt").glob("migrate-*.json")).read_text())
    assert ckpt["layers"]["kern"]["copied"] == 2000
    with KnowledgeBase.open(base_settings(tmp_path / "b"), embedder=embedder) as kb:
        assert kb.count("kern") == 0  # nothing flipped yet: the destination is unchanged
    env.pop("OSP_FAILPOINTS")
    done = _migrate_cli(src.data_dir, dst, env)
    assert done.returncode == 0, done.stderr
    assert "resumed at 2000" in done.stdout
    assert not list((tmp_path / "ckpt").glob("migrate-*.json"))
    with KnowledgeBase.open(base_settings(tmp_path / "b"), embedder=embedder) as kb:
        assert kb.count("kern") == n
        assert swap.orphans(kb) == []
