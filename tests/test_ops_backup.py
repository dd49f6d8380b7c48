"""Backup archives in both storage modes: exact round trip (chunks, embeddings bit-for-bit,
document registry), atomic restore with a new epoch, tampered archives refused, retention."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osprag import EmbeddingMismatch, KnowledgeBase, Settings
from osprag.embedding import Embedder
from osprag.errors import BackupInvalid, ConfigError
from osprag.ops import archive, swap
from osprag.ops.backup import (
    backup_dir,
    create_backup,
    list_backups,
    prune_backups,
    restore_backup,
    verify_backup,
)

CORPUS = Path(__file__).parents[1] / "examples" / "osp-corpus" / "kern"
TEXTS = [
    f"Prüfanweisung {i}: Crimphöhe {0.7 + i / 100:.2f} mm, Auszugskraft messen" for i in range(12)
]


def small_corpus(tmp_path: Path) -> Path:
    """Three small documents of the sample corpus (enough for the document registry)."""
    root = tmp_path / "corpus"
    root.mkdir()
    for name in sorted(p.name for p in CORPUS.glob("*.md"))[:3]:
        shutil.copy(CORPUS / name, root / name)
    return root


def fill(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.add(
        "kern",
        TEXTS,
        ids=[f"t{i}" for i in range(len(TEXTS))],
        metadatas=[
            {"access_level": 1 + i % 4, "version": "2.1", "score": 0.1 * i, "ok": i % 2 == 0}
            for i in range(len(TEXTS))
        ],
    )
    report = kb.ingest([small_corpus(tmp_path)], "erweitert")
    assert report.exit_code == 0


def snapshot(kb: KnowledgeBase) -> dict[str, Any]:
    """Everything restore must bring back exactly: chunks with raw vectors, registry records.

    In cosine space Chroma stores a re-normalised copy of every vector, so a vector read back
    and written again can move by one float32 ulp (measured: chromadb 1.5.9 normalises on
    every insert); ``same`` compares those within 1e-7 and everything else exactly.
    """
    out: dict[str, Any] = {}
    for layer in kb.settings.ordered_layers():
        col = kb.collection_for(layer)
        if col is None:
            out[layer] = None
            continue
        raw = col.get(include=["documents", "metadatas", "embeddings"])
        out[layer] = sorted(
            (
                rid,
                doc,
                json.dumps(meta, sort_keys=True),
                np.asarray(vec, dtype=np.float32).tobytes(),
            )
            for rid, doc, meta, vec in zip(
                raw["ids"], raw["documents"], raw["metadatas"], raw["embeddings"], strict=True
            )
        )
    docs = kb.store.documents().get(include=["documents", "metadatas"])
    out["documents"] = sorted(
        (rid, doc, json.dumps(meta, sort_keys=True))
        for rid, doc, meta in zip(docs["ids"], docs["documents"], docs["metadatas"], strict=True)
    )
    return out


def same(a: dict[str, Any], b: dict[str, Any], space: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "documents" or a[key] is None or b[key] is None:
            assert a[key] == b[key], key
            continue
        assert [r[:3] for r in a[key]] == [r[:3] for r in b[key]], key
        va = np.vstack([np.frombuffer(r[3], dtype=np.float32) for r in a[key]])
        vb = np.vstack([np.frombuffer(r[3], dtype=np.float32) for r in b[key]])
        if space == "cosine":
            assert np.abs(va - vb).max() <= 1e-7, key
        else:
            assert va.tobytes() == vb.tobytes(), key


def test_backup_restore_round_trip_is_exact(
    kb: KnowledgeBase, tmp_path: Path, settings: Settings
) -> None:
    fill(kb, tmp_path)
    before = snapshot(kb)
    hits_before = [h.id for h in kb.query("Crimphöhe messen", n_results=5).hits]
    info = create_backup(kb, tag="nightly")
    path = Path(info.path)
    assert path.parent == backup_dir(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert info.counts["kern"] == len(TEXTS) and info.counts["erweitert"] > 0
    assert info.documents["erweitert"] >= 3

    # damage the live store: delete records, drop a layer, add junk
    kb.delete("kern", ids=["t1", "t2"])
    kb.drop_layer("erweitert", yes=True)
    kb.add("kern", ["Fremdtext"], ids=["junk"])
    epoch = swap.current_epoch(kb.store)

    report = restore_backup(kb, path)
    assert report.epoch == epoch + 1 == swap.current_epoch(kb.store)
    assert report.pre_restore_backup is not None
    same(snapshot(kb), before, settings.space)
    assert [h.id for h in kb.query("Crimphöhe messen", n_results=5).hits] == hits_before
    assert kb.lexical.count("kern") == len(TEXTS)
    assert swap.orphans(kb) == []
    # the pre-restore backup holds the damaged state
    pre = verify_backup(Path(report.pre_restore_backup))
    assert pre.counts["kern"] == len(TEXTS) - 1 and pre.counts["erweitert"] == 0
    # a fresh process sees the restored state
    kb.close()
    with KnowledgeBase.open(settings, embedder=kb._embedder) as again:
        same(snapshot(again), before, settings.space)
        assert [h.id for h in again.query("Crimphöhe messen", n_results=5).hits] == hits_before


def test_encrypted_backup(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.add("kern", TEXTS[:3], ids=["a", "b", "c"])
    key_file = archive.generate_key(tmp_path / "backup.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    info = create_backup(kb, key=archive.load_key(key_file))
    path = Path(info.path)
    assert path.name.endswith(".tar.gz.enc") and archive.is_encrypted(path)
    assert b"Crimph" not in path.read_bytes()
    with pytest.raises(BackupInvalid, match="encrypted"):
        verify_backup(path)
    with pytest.raises(BackupInvalid, match="wrong key"):
        verify_backup(path, key=os.urandom(32))
    assert verify_backup(path, key=archive.load_key(key_file)).counts["kern"] == 3
    kb.delete("kern", ids=["a"])
    restore_backup(kb, path, key=archive.load_key(key_file), pre_backup=False)
    assert kb.count("kern") == 3
    with pytest.raises(ConfigError, match="256-bit"):
        (tmp_path / "bad.key").write_text("short")
        archive.load_key(tmp_path / "bad.key")


# ------------------------------------------------------------------ tampering (pure files)


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    s = Settings(data_dir=tmp / "data", cache_dir=tmp / "cache", embedding_backend="torch")
    with KnowledgeBase.open(s, embedder=embedder) as kb:
        kb.add("kern", TEXTS[:4], ids=["a", "b", "c", "d"])
        return Path(create_backup(kb).path)


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]


def _rewrite(path: Path, target: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return target


def _kern(members: list[tuple[tarfile.TarInfo, bytes]]) -> int:
    return next(i for i, (m, _) in enumerate(members) if m.name == "layers/kern.jsonl")


def test_tampered_archives_are_refused(good_archive: Path, tmp_path: Path) -> None:
    assert verify_backup(good_archive).ok
    base = _members(good_archive)

    changed = list(base)
    i = _kern(changed)
    info, data = changed[i]
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    changed[i] = (info, bytes(flipped))
    with pytest.raises(BackupInvalid, match="sha256"):
        verify_backup(_rewrite(good_archive, tmp_path / "changed.tar.gz", changed))

    extra = [*base, (tarfile.TarInfo("layers/extra.jsonl"), b"")]
    with pytest.raises(BackupInvalid, match="not listed"):
        verify_backup(_rewrite(good_archive, tmp_path / "extra.tar.gz", extra))

    for name in ("../evil.jsonl", "/etc/evil", "layers/../../x.jsonl"):
        evil = tarfile.TarInfo(name)
        evil.size = 1
        with pytest.raises(BackupInvalid, match="unsafe path"):
            verify_backup(_rewrite(good_archive, tmp_path / "trav.tar.gz", [*base, (evil, b"x")]))

    link = tarfile.TarInfo("layers/kern.jsonl")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    linked = list(base)
    linked[_kern(linked)] = (link, b"")
    with pytest.raises(BackupInvalid, match="symlink"):
        verify_backup(_rewrite(good_archive, tmp_path / "link.tar.gz", linked))

    missing = [m for m in base if m[0].name != "layers/kern.jsonl"]
    with pytest.raises(BackupInvalid, match="lacks"):
        verify_backup(_rewrite(good_archive, tmp_path / "missing.tar.gz", missing))

    trunc = tmp_path / "trunc.tar.gz"
    trunc.write_bytes(good_archive.read_bytes()[:-40])
    with pytest.raises(BackupInvalid):
        verify_backup(trunc)

    # the sidecar records the archive's hash: a replaced archive is caught before reading it
    copy = tmp_path / good_archive.name
    copy.write_bytes(_rewrite(good_archive, tmp_path / "x.tar.gz", base).read_bytes())
    shutil.copy(str(good_archive) + ".json", str(copy) + ".json")
    with pytest.raises(BackupInvalid, match="recorded"):
        verify_backup(copy)


def test_restore_refuses_bad_archive_and_leaves_store_alone(
    kb: KnowledgeBase, good_archive: Path, tmp_path: Path
) -> None:
    kb.add("kern", ["bleibt"], ids=["keep"])
    members = _members(good_archive)
    evil = tarfile.TarInfo("../escape.jsonl")
    evil.size = 3
    bad = _rewrite(good_archive, tmp_path / "bad.tar.gz", [*members, (evil, b"abc")])
    with pytest.raises(BackupInvalid):
        restore_backup(kb, bad)
    assert [r.id for r in kb.get("kern")] == ["keep"]
    assert not (tmp_path / "escape.jsonl").exists()
    assert list_backups(kb.settings) == []  # refused before the pre-restore backup


def test_restore_refuses_identity_mismatch(kb: KnowledgeBase, good_archive: Path) -> None:
    kb.add("kern", ["bleibt"], ids=["keep"])
    work = good_archive.parent / "mismatch"
    work.mkdir(exist_ok=True)
    members = _members(good_archive)
    manifest = json.loads(members[0][1])
    i = _kern(members)
    lines = members[i][1].decode().splitlines()
    header = json.loads(lines[0])
    header["identity"]["name"] = "example/other-model"
    lines[0] = json.dumps(header)
    data = ("\n".join(lines) + "\n").encode()
    import hashlib

    manifest["files"]["layers/kern.jsonl"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    body = json.dumps(manifest).encode()
    members[0][0].size = len(body)
    members[i][0].size = len(data)
    members[0] = (members[0][0], body)
    members[i] = (members[i][0], data)
    other = _rewrite(good_archive, work / "other.tar.gz", members)
    with pytest.raises(EmbeddingMismatch, match="other-model"):
        restore_backup(kb, other)
    assert [r.id for r in kb.get("kern")] == ["keep"]
    report = restore_backup(kb, other, reembed=True, pre_backup=False)
    assert {r.layer: r.reembedded for r in report.layers} == {"kern": True, "erweitert": False}
    assert sorted(r.id for r in kb.get("kern")) == ["a", "b", "c", "d"]


def test_prune_keeps_daily_and_weekly(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    stamps = [
        "20260101T020000Z",  # week 1
        "20260105T020000Z",  # week 2
        "20260112T020000Z",  # week 3
        "20260119T020000Z",
        "20260120T020000Z",
        "20260121T020000Z",
        "20260121T140000Z",  # same day: only the newest of the day is a daily
        "20260122T020000Z",
    ]
    for s in stamps:
        (folder / f"osp-{s}.tar.gz").write_bytes(b"x" * 10)
    settings = Settings(backup_dir=folder)
    report = prune_backups(settings, keep_daily=3, keep_weekly=3, dry_run=True)
    assert report.dry_run and len(list(folder.iterdir())) == len(stamps)
    report = prune_backups(settings, keep_daily=3, keep_weekly=3)
    left = sorted(p.name[4:20] for p in folder.iterdir())
    # daily: 22nd, 21st 14:00, 20th; weekly (newest of ISO weeks 4, 3, 2): 22nd, 12th, 5th
    assert left == [
        "20260105T020000Z",
        "20260112T020000Z",
        "20260120T020000Z",
        "20260121T140000Z",
        "20260122T020000Z",
    ]
    assert report.freed_bytes == 30
    assert [b.created for b in list_backups(settings)][0] == "2026-01-22T02:00:00Z"


def test_cli_backup_exit_codes_and_log_lines(tmp_path: Path, embedder: Embedder) -> None:
    """cron-facing behaviour: one `backup ok:` line; a held lock is exit 8 naming the holder;
    restore without --yes is exit 4 and changes nothing; list/verify/prune as JSON."""
    from click.testing import CliRunner

    from osprag.cli import cli

    s = Settings(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        backup_dir=tmp_path / "b",
        embedding_backend="torch",
    )
    env = {
        "OSP_DATA_DIR": str(s.data_dir),
        "OSP_BACKUP_DIR": str(s.backup_dir),
        "OSP_CACHE_DIR": str(s.cache_dir),
        "OSP_EMBEDDING_BACKEND": "torch",
    }
    run = CliRunner().invoke
    holder = KnowledgeBase.open(s, embedder=embedder)
    holder.add("kern", ["Crimphöhe"], ids=["a"])
    locked = run(cli, ["backup", "create", "--wait", "0.2"], env=env)
    assert locked.exit_code == 8 and "pid" in locked.output
    holder.close()
    ok = run(cli, ["-q", "backup", "create", "--tag", "nightly"], env=env)
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("backup ok: ") and "kern=1" in ok.output
    path = ok.output.split()[2]
    refused = run(cli, ["backup", "restore", path], env=env)
    assert refused.exit_code == 4 and "--yes" in refused.output
    listed = json.loads(run(cli, ["backup", "list", "--json"], env=env).output)
    assert [b["tag"] for b in listed] == ["nightly"] and listed[0]["counts"]["kern"] == 1
    verified = json.loads(run(cli, ["backup", "verify", path, "--json"], env=env).output)
    assert verified["ok"] is True
    pruned = json.loads(
        run(
            cli, ["backup", "prune", "--keep-daily", "1", "--keep-weekly", "0", "--json"], env=env
        ).output
    )
    assert pruned["deleted"] == [] and len(pruned["kept"]) == 1
    bad = run(cli, ["backup", "create", "--tag", "../x"], env=env)
    assert bad.exit_code == 4
