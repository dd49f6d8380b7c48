"""The no-op re-sync from the manifest: taken only when the full sync would change nothing,
with the same report; declined after any file change or any write to the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import osprag
from osprag import KnowledgeBase, Settings, StoreLocked
from osprag.embedding import Embedder
from osprag.ingest.noop import MANIFEST_DIR, try_noop
from osprag.ingest.sync import IngestReport
from tests.conftest import base_settings
from tests.test_sync import write_doc


@pytest.fixture
def esettings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path, storage="embedded")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write_doc(root, "PRD_CRM_Crimphoehe.md", "## Toleranzen\n\nCrimphöhe 0,80 ± 0,03 mm.")
    write_doc(root, "QM_REK_8D.md", "## D3\n\nSofortmaßnahmen innerhalb von 24 Stunden.")
    write_doc(root, "sub/QM_MSA_Messsystem.md", "%GRR unter 10 % ist fähig.", level="L1")
    return root


def full(
    settings: Settings, embedder: Embedder, folder: Path, layer: str = "kern", **kw: Any
) -> IngestReport:
    with KnowledgeBase.open(settings, embedder=embedder) as kb:
        return kb.ingest([folder], layer, **kw)


def comparable(report: IngestReport) -> dict[str, Any]:
    data = report.to_dict()
    data.pop("seconds")
    return data


def test_fast_path_gives_the_full_syncs_report(
    esettings: Settings, embedder: Embedder, docs: Path
) -> None:
    assert try_noop(esettings, [docs], "kern") is None  # nothing recorded yet
    assert full(esettings, embedder, docs).counts()["added"] == 3
    fast = try_noop(esettings, [docs], "kern")
    assert fast is not None and fast.counts()["unchanged"] == 3 and fast.exit_code == 0
    slow = full(esettings, embedder, docs)  # the full path on the same state
    assert comparable(fast) == comparable(slow)
    for kw in ({"dry_run": True}, {"glob": "QM_*"}):
        other = try_noop(esettings, [docs], "kern", **kw)
        assert other is not None and comparable(other) == comparable(
            full(esettings, embedder, docs, **kw)
        )
    assert len(other.files) == 2  # the glob matched two files
    # the full no-op re-stamped the manifest: still valid, and the same for the next run
    again = try_noop(esettings, [docs], "kern")
    assert again is not None and comparable(again) == comparable(fast)
    # what the fast path cannot vouch for goes the full way
    assert try_noop(esettings, [docs / "QM_REK_8D.md"], "kern") is None  # single file
    assert try_noop(esettings, [docs], "kern", recursive=False) is None  # sub/ would be deleted
    for path in (esettings.data_dir / MANIFEST_DIR).glob("*.json"):
        path.write_text("{not json")
    assert try_noop(esettings, [docs], "kern") is None


Change = Callable[[Path], None]


def _edit(root: Path) -> None:
    write_doc(root, "QM_REK_8D.md", "## D3\n\nSofortmaßnahmen binnen 48 Stunden.", bump=True)


def _touch(root: Path) -> None:
    path = root / "QM_REK_8D.md"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def _delete(root: Path) -> None:
    (root / "sub" / "QM_MSA_Messsystem.md").unlink()


def _new(root: Path) -> None:
    write_doc(root, "QM_AUD_Prozessaudit.md", "## Bewertung\n\nEinstufung A ab 90 %.")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_edit, {"updated": 1, "unchanged": 2}),
        (_touch, {"unchanged": 3}),  # new mtime, same hash: re-hashed, not re-embedded
        (_delete, {"deleted": 1, "unchanged": 2}),
        (_new, {"added": 1, "unchanged": 3}),
    ],
    ids=["edit", "touch-same-content", "delete", "new"],
)
def test_file_changes_take_the_full_path(
    esettings: Settings, embedder: Embedder, docs: Path, change: Change, expected: dict[str, int]
) -> None:
    full(esettings, embedder, docs)
    assert try_noop(esettings, [docs], "kern") is not None
    change(docs)
    assert try_noop(esettings, [docs], "kern") is None
    report = full(esettings, embedder, docs)
    assert {k: v for k, v in report.counts().items() if v} == expected
    after = try_noop(esettings, [docs], "kern")
    assert after is not None and comparable(after) == comparable(full(esettings, embedder, docs))


def _kb_delete(kb: KnowledgeBase) -> None:
    rid = kb.get("kern", limit=1)[0].id
    assert kb.delete("kern", ids=[rid]) == 1


def _registry_write(kb: KnowledgeBase) -> None:
    # a write path that tells nobody (no generation bump): only the store itself changes
    docs = kb.store.documents()
    res = docs.get(limit=1, include=["metadatas", "documents"])
    docs.write("upsert", res["ids"], [[1.0]], res["documents"], res["metadatas"])


def _csv_import(kb: KnowledgeBase) -> None:
    path = kb.settings.data_dir.parent / "rows.csv"
    path.write_text("id,text,doc_type\nr1,Prüfmittelüberwachung jährlich,VA\n", encoding="utf-8")
    assert kb.import_csv(path, "erweitert").added == 1


@pytest.mark.parametrize(
    "write",
    [_kb_delete, _registry_write, _csv_import, KnowledgeBase.new_epoch],
    ids=["kb.delete", "registry-write-without-generation", "import-csv", "restore-new-epoch"],
)
def test_store_writes_by_other_paths_take_the_full_path(
    esettings: Settings, embedder: Embedder, docs: Path, write: Callable[[KnowledgeBase], Any]
) -> None:
    full(esettings, embedder, docs)
    assert try_noop(esettings, [docs], "kern") is not None
    with KnowledgeBase.open(esettings, embedder=embedder) as kb:
        write(kb)
    assert try_noop(esettings, [docs], "kern") is None
    full(esettings, embedder, docs)
    assert try_noop(esettings, [docs], "kern") is not None


def test_a_sync_of_another_layer_keeps_this_roots_manifest_valid(
    esettings: Settings, embedder: Embedder, docs: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    write_doc(other, "QM_KAL_Kalibrierung.md", "## Intervall\n\nMessschieber alle 12 Monate.")
    full(esettings, embedder, docs)
    full(esettings, embedder, other, layer="erweitert")  # writes: the store changed
    assert try_noop(esettings, [docs], "kern") is not None  # re-stamped by that sync
    assert try_noop(esettings, [other], "erweitert") is not None
    assert try_noop(esettings, [docs, other], "kern") is None  # other is no root of kern


def test_locked_or_server_store(esettings: Settings, embedder: Embedder, docs: Path) -> None:
    full(esettings, embedder, docs)
    with KnowledgeBase.open(esettings, embedder=embedder), pytest.raises(StoreLocked):
        try_noop(esettings, [docs], "kern")  # the full path would refuse the same way
    server = esettings.model_copy(update={"storage": "server", "chroma_url": "http://127.0.0.1:9"})
    assert try_noop(server, [docs], "kern") is None


_PROBE = """
import json, sys
from osprag.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("chromadb", "numpy", "onnxruntime", "torch") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_cli_no_op_skips_chromadb_and_prints_the_same_report(
    esettings: Settings, embedder: Embedder, docs: Path
) -> None:
    full(esettings, embedder, docs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    env["OSP_CACHE_DIR"] = str(esettings.cache_dir)
    # the osprag under test, also when it comes from a relative PYTHONPATH (cwd is tmp_path)
    package_root = str(Path(osprag.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    args = ["--data-dir", str(esettings.data_dir), "ingest", str(docs), "--layer", "kern", "--json"]

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        res = subprocess.run(
            [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env
        )
        assert res.returncode == 0, res.stderr
        *report, probe = res.stdout.strip().splitlines()
        data = json.loads("\n".join(report))
        data.pop("seconds")
        return data, json.loads(probe)

    for path in (esettings.data_dir / MANIFEST_DIR).glob("*.json"):
        path.unlink()
    slow, slow_probe = run()  # no manifest: the full path (and it writes one)
    fast, fast_probe = run()
    assert "chromadb" in slow_probe["heavy"] and fast_probe["heavy"] == []
    assert slow == fast and fast_probe["code"] == slow_probe["code"] == 0
