"""Folder sync in both storage modes: add, change, delete, unchanged, bad files, atomicity."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from osprag import KnowledgeBase, Principal

HEADER = "Version: {v} | TAG: [PRD][CRM] | Autor: AL | Zugriff: {lvl} | Status: AKTIV"


def write_doc(
    folder: Path,
    name: str,
    body: str,
    *,
    version: str = "1.0",
    level: str = "L2",
    bump: bool = False,
) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# {name}\n\n{HEADER.format(v=version, lvl=level)}\n\n{body}\n", encoding="utf-8"
    )
    if bump:  # a changed file must look changed even within one mtime tick
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write_doc(
        root,
        "PRD_CRM_Crimphoehe.md",
        "## Toleranzen\n\nDie Crimphöhe für 0,35 mm² beträgt 0,80 ± 0,03 mm.\n\n"
        "## Prüfung\n\nGeprüft wird bei Losbeginn und nach Werkzeugwechsel.",
    )
    write_doc(
        root, "QM_REK_8D.md", "## D3\n\nSofortmaßnahmen innerhalb von 24 Stunden.", level="L3"
    )
    write_doc(root, "sub/QM_MSA_Messsystem.md", "%GRR unter 10 % ist fähig.", level="L1")
    (root / "notes.xyz").write_text("ignored format")
    return root


def mark_dirty(kb: KnowledgeBase, folder: Path) -> None:
    from osprag.ingest import sync

    syncer = sync.Syncer(kb, "kern")
    root_key = str(folder.resolve())
    syncer._marker = (sync.doc_key("kern", root_key, sync.ROOT_MARKER), root_key)
    syncer._set_marker("dirty")


def sources(kb: KnowledgeBase, layer: str = "kern") -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in kb.get(layer):
        out[rec.metadata["source"]] = out.get(rec.metadata["source"], 0) + 1
    return out


def test_sync_add_unchanged_change_delete(kb: KnowledgeBase, folder: Path) -> None:
    report = kb.ingest([folder], "kern")
    assert report.counts()["added"] == 3 and report.exit_code == 0
    assert set(sources(kb)) == {"PRD_CRM_Crimphoehe.md", "QM_REK_8D.md", "sub/QM_MSA_Messsystem.md"}
    hit = kb.query("Crimphöhe 0,35 mm²", n_results=1).hits[0]
    meta = hit.metadata
    assert meta["source"] == "PRD_CRM_Crimphoehe.md" and hit.layer == "kern"
    assert meta["tag"] == "PRD" and meta["sub_tag"] == "CRM" and meta["access_level"] == 2
    assert meta["version"] == "1.0" and meta["status"] == "AKTIV" and meta["language"] == "de"
    assert "Toleranzen" in meta["section"]
    assert len(meta["sha256"]) == 64 and meta["format"] == "md"
    assert not any(k.startswith("osp_") for k in meta)
    ids_before = {r.id for r in kb.get("kern", include=[])}

    again = kb.ingest([folder], "kern")
    assert again.counts()["unchanged"] == 3 and again.texts_embedded == 0
    assert {r.id for r in kb.get("kern", include=[])} == ids_before

    write_doc(
        folder,
        "PRD_CRM_Crimphoehe.md",
        "## Toleranzen\n\nNeu: 0,82 ± 0,02 mm.",
        version="2.0",
        bump=True,
    )
    (folder / "QM_REK_8D.md").unlink()
    changed = kb.ingest([folder], "kern")
    counts = changed.counts()
    assert (counts["updated"], counts["deleted"], counts["unchanged"]) == (1, 1, 1)
    assert set(sources(kb)) == {"PRD_CRM_Crimphoehe.md", "sub/QM_MSA_Messsystem.md"}
    texts = [r.text for r in kb.get("kern", where={"source": "PRD_CRM_Crimphoehe.md"})]
    assert any("0,82" in (t or "") for t in texts) and not any("0,80" in (t or "") for t in texts)
    assert {
        r.metadata["version"] for r in kb.get("kern", where={"source": "PRD_CRM_Crimphoehe.md"})
    } == {"2.0"}
    # the first query above memoised the old revision pointer: the write must void it
    for mode in ("dense", "lexical", "hybrid"):
        found = kb.query("Toleranzen Crimphöhe", n_results=10, mode=mode).hits
        crimp = [h for h in found if h.metadata["source"] == "PRD_CRM_Crimphoehe.md"]
        assert crimp and {h.metadata["version"] for h in crimp} == {"2.0"}, mode
    # nothing left over from the old version anywhere in the collection
    col = kb.collection_for("kern")
    assert col is not None and col.count() == len(kb.get("kern", include=[]))


def test_touched_but_identical_file_is_not_reembedded(kb: KnowledgeBase, folder: Path) -> None:
    kb.ingest([folder], "kern")
    path = folder / "QM_REK_8D.md"
    os.utime(path, (time.time() + 5, time.time() + 5))
    report = kb.ingest([folder], "kern")
    assert report.counts()["unchanged"] == 3 and report.texts_embedded == 0


def test_dry_run_writes_nothing(kb: KnowledgeBase, folder: Path) -> None:
    report = kb.ingest([folder], "kern", dry_run=True)
    assert report.counts()["added"] == 3
    assert kb.count("kern") == 0


def test_overrides_and_single_file(kb: KnowledgeBase, folder: Path) -> None:
    report = kb.ingest(
        [folder / "QM_REK_8D.md"], "erweitert", overrides={"Zugriff": "L1", "category": "8D"}
    )
    assert report.counts()["added"] == 1
    rec = kb.get("erweitert")[0]
    assert rec.metadata["access_level"] == 1 and rec.metadata["category"] == "8D"
    public = kb.query("Sofortmaßnahmen", layers="erweitert", principal=Principal("p", 1))
    assert public.hits


def test_bad_metadata_fails_that_file_only(kb: KnowledgeBase, folder: Path) -> None:
    write_doc(folder, "QM_BAD_Zugriff.md", "Text", level="L9")
    (folder / "leer.txt").write_bytes(b"")
    (folder / "junk.txt").write_bytes(bytes(range(256)) * 40)
    report = kb.ingest([folder], "kern")
    failed = {f.source: f.reason for f in report.files if f.status == "failed"}
    assert set(failed) == {"QM_BAD_Zugriff.md", "leer.txt", "junk.txt"}
    assert "access_level" in (failed["QM_BAD_Zugriff.md"] or "")
    assert report.counts()["added"] == 3 and report.exit_code == 1
    assert set(sources(kb)) == {"PRD_CRM_Crimphoehe.md", "QM_REK_8D.md", "sub/QM_MSA_Messsystem.md"}


def test_failed_reparse_keeps_old_version(kb: KnowledgeBase, folder: Path) -> None:
    kb.ingest([folder], "kern")
    before = sorted(r.id for r in kb.get("kern", include=[]))
    (folder / "QM_REK_8D.md").write_bytes(b"\x00\x01\x02 binary now")
    report = kb.ingest([folder], "kern")
    assert [f.status for f in report.files if f.source == "QM_REK_8D.md"] == ["failed"]
    assert sorted(r.id for r in kb.get("kern", include=[])) == before


def test_symlink_loop_reported(kb: KnowledgeBase, folder: Path) -> None:
    os.symlink("loop.md", folder / "loop.md")
    report = kb.ingest([folder], "kern")
    assert any(f.source == "loop.md" and f.status == "failed" for f in report.files)
    assert report.counts()["added"] == 3


def test_new_version_invisible_until_pointer_flips(kb: KnowledgeBase, folder: Path) -> None:
    """Chunks of a version that is not the document's current one never reach a reader."""
    kb.ingest([folder], "kern")
    rec = kb.get("kern", where={"source": "QM_REK_8D.md"})[0]
    col = kb.collection_for("kern")
    assert col is not None
    raw = col.get(ids=[rec.id], include=["metadatas"])["metadatas"][0]
    pending = dict(raw, osp_rev="0000000000000000", chunk_index=99)
    kb.write_chunks(
        "kern",
        ["Neue, noch nicht freigegebene Sofortmaßnahmen D3 8D"],
        ids=["pending-chunk"],
        metadatas=[pending],
    )
    assert col.count() == len(kb.get("kern", include=[])) + 1
    assert all(h.id != "pending-chunk" for h in kb.query("Sofortmaßnahmen D3", n_results=10).hits)
    assert kb.get("kern", ids=["pending-chunk"]) == []
    mark_dirty(kb, folder)  # as a sync killed after writing would have left it
    kb.ingest([folder], "kern")  # the next sync collects it
    assert col.count() == len(kb.get("kern", include=[]))


def test_bad_file_fixture_set(kb: KnowledgeBase, folder: Path) -> None:
    """Every bad file is reported with path and reason; the good ones stay exactly as they were."""
    from .fixtures.make_bad_files import EXPECTED, make_bad_files

    kb.ingest([folder], "kern")
    before = sorted((r.id, r.text) for r in kb.get("kern"))
    make_bad_files(folder / "bad")
    report = kb.ingest([folder], "kern")
    by_source = {f.source: f for f in report.files}
    for name, fragment in EXPECTED.items():
        source = f"bad/{name}"
        if name == "drawing.xyz":
            assert source not in by_source  # unsupported formats are not candidates
        elif name == "partly-scanned.pdf":
            assert by_source[source].status == "added"
            assert any(fragment in w for w in by_source[source].warnings)
        elif name == "unreadable.md" and os.geteuid() == 0:
            assert by_source[source].status == "added"  # root reads mode-000 files
        else:
            result = by_source[source]
            assert result.status == "failed", name
            assert fragment in (result.reason or ""), (name, result.reason)
    assert by_source["bad/loop-b.md"].status == "failed"
    assert report.exit_code == 1
    after = sorted(
        (r.id, r.text) for r in kb.get("kern") if not r.metadata["source"].startswith("bad/")
    )
    assert after == before


def test_clean_noop_sync_skips_stray_scan(
    kb: KnowledgeBase, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from osprag.ingest import sync

    calls: list[str] = []
    original = sync.Syncer._collect_strays

    def spy(self: sync.Syncer, root_key: str) -> None:
        calls.append(root_key)
        original(self, root_key)

    monkeypatch.setattr(sync.Syncer, "_collect_strays", spy)
    kb.ingest([folder], "kern")
    assert len(calls) == 1
    kb.ingest([folder], "kern")
    assert len(calls) == 1  # nothing written, previous run finished cleanly
    # a run that died after marking the root dirty is cleaned up by the next one
    syncer = sync.Syncer(kb, "kern")
    syncer._marker = (
        sync.doc_key("kern", str(folder.resolve()), sync.ROOT_MARKER),
        str(folder.resolve()),
    )
    syncer._set_marker("dirty")
    kb.ingest([folder], "kern")
    assert len(calls) == 2


def test_files_are_written_in_groups_and_a_refused_file_fails_alone(
    kb: KnowledgeBase, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One chunk write for the whole folder; when the store refuses one file's chunks, the
    group is retried file by file, so only that file fails and the others are in."""
    from osprag.errors import InvalidMetadata

    calls: list[int] = []
    original = KnowledgeBase.write_chunks

    def spy(self: KnowledgeBase, layer: str, texts: Any, **kwargs: Any) -> Any:
        calls.append(len(texts))
        if any("Sofortmaßnahmen" in t for t in texts):
            raise InvalidMetadata("refused for the test")
        return original(self, layer, texts, **kwargs)

    monkeypatch.setattr(KnowledgeBase, "write_chunks", spy)
    report = kb.ingest([folder], "kern")
    assert calls[0] == sum(calls[1:]) and len(calls) == 4  # the group, then 3 files alone
    assert {f.source: f.status for f in report.files} == {
        "PRD_CRM_Crimphoehe.md": "added",
        "QM_REK_8D.md": "failed",
        "sub/QM_MSA_Messsystem.md": "added",
    }
    assert set(sources(kb)) == {"PRD_CRM_Crimphoehe.md", "sub/QM_MSA_Messsystem.md"}
    monkeypatch.undo()
    assert kb.ingest([folder], "kern").counts()["added"] == 1  # the refused file comes next time
