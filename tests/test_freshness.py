"""Cross-process freshness: a write in one knowledge base is seen by another one's next query,
with no stale cached hit, in both storage modes (server: two "machines" with separate caches
and lexical indexes sharing one Chroma server, caught up through the write log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from osprag import KnowledgeBase, Settings
from osprag.embedding import Embedder
from osprag.generations import Generation, GenerationStore
from osprag.writelog import WriteLog

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def other(settings: Settings, embedder: Embedder, tmp_path: Path) -> Iterator[KnowledgeBase]:
    """A second knowledge base on the same store: another machine (own cache dir, lexical
    index and generation file) in server mode, a read-only reader in embedded mode."""
    if settings.effective_storage == "server":
        second = settings.model_copy(update={"cache_dir": tmp_path / "machine-b"})
        base = KnowledgeBase.open(second, embedder=embedder)
    else:
        base = KnowledgeBase.open(settings, embedder=embedder, read_only=True)
    try:
        yield base
    finally:
        base.close()


def _ids(kb: KnowledgeBase, text: str, mode: str = "lexical") -> list[str]:
    return [h.id for h in kb.query(text, mode=mode, n_results=5).hits]


@pytest.mark.parametrize("mode", ["lexical", "hybrid", "dense"])
def test_a_write_in_one_instance_is_seen_by_the_other(
    kb: KnowledgeBase, other: KnowledgeBase, mode: str
) -> None:
    kb.add("kern", ["Die Crimphöhe beträgt 0,80 mm."], ids=["c1"])
    assert _ids(other, "Crimphöhe", mode) == ["c1"]
    before = other.generation("kern")
    # the same query again is served from the cache ...
    assert _ids(other, "Crimphöhe", mode) == ["c1"]
    assert other.cache_stats()["hits"] == 1

    # ... until the other instance writes: no stale hit, old text gone, new text found
    kb.upsert("kern", ["Die Auszugskraft beträgt 60 N."], ids=["c1"])
    stale = [h for h in other.query("Crimphöhe", mode=mode).hits if "Crimp" in (h.text or "")]
    assert stale == []
    if mode == "lexical":
        assert _ids(other, "Crimphöhe", mode) == []
    hit = other.query("Auszugskraft", mode=mode).hits[0]
    assert (hit.id, hit.text) == ("c1", "Die Auszugskraft beträgt 60 N.")
    assert other.generation("kern") != before

    kb.delete("kern", where={"access_level": 4})
    assert _ids(other, "Auszugskraft", mode) == []
    if other.settings.effective_storage == "server":
        assert other.freshness.stats["applied"] >= 2  # through the log, not by rebuilding


def test_generations_change_with_every_write_and_only_for_that_layer(kb: KnowledgeBase) -> None:
    kb.catch_up()
    g0 = kb.generation("kern"), kb.generation("erweitert")
    kb.add("kern", ["eins"], ids=["a"])
    g1 = kb.generation("kern"), kb.generation("erweitert")
    assert g1[0] != g0[0] and g1[1] == g0[1]
    kb.update("kern", ["a"], metadatas=[{"status": "AKTIV"}])
    kb.delete_ids("kern", ["a"])
    g2 = kb.generation("kern")
    assert g2.seq == g1[0].seq + 2 and g2.epoch == g1[0].epoch


def test_a_new_epoch_drops_caches_and_rebuilds(kb: KnowledgeBase, other: KnowledgeBase) -> None:
    kb.add("kern", ["Lenkung von Prüfmitteln"], ids=["p1"])
    assert _ids(other, "Prüfmitteln") == ["p1"]
    old = other.generation("kern")
    # what a restore does: contents replaced behind every process's back, then a new epoch
    col = kb.collection_for("kern")
    assert col is not None
    col.delete(["p1"])
    kb.new_epoch()
    assert _ids(other, "Prüfmitteln") == []
    assert other.generation("kern").epoch == old.epoch + 1


def test_drop_layer_reaches_the_other_instance(kb: KnowledgeBase, other: KnowledgeBase) -> None:
    kb.add("erweitert", ["VDA 6.3 Prozessaudit P6"], ids=["v1"])
    assert _ids(other, "Prozessaudit") == ["v1"]
    kb.drop_layer("erweitert", yes=True)
    assert _ids(other, "Prozessaudit") == []


def test_a_write_from_another_process_is_seen(kb: KnowledgeBase, other: KnowledgeBase) -> None:
    kb.add(
        "kern",
        ["Reklamation 8D Bericht A", "Reklamation 8D Bericht B"],
        ids=["r1", "r2"],
        metadatas=[{"category": "a"}, {"category": "b"}],
    )
    assert sorted(_ids(other, "Reklamation")) == ["r1", "r2"]
    script = (
        "import sys, json\n"
        "from osprag import KnowledgeBase, Settings\n"
        "s = Settings(**json.loads(sys.argv[1]))\n"
        "with KnowledgeBase.open(s) as kb:\n"
        "    print(kb.delete('kern', where={'category': 'b'}))\n"
    )
    s = kb.settings
    values = {
        "storage": s.effective_storage,
        "data_dir": str(s.data_dir),
        "cache_dir": str(s.effective_cache_dir.parent / "machine-c"),
        "embedding_backend": "torch",
    }
    if s.chroma_url:
        values.update(chroma_url=s.chroma_url, chroma_database=s.chroma_database)
    if s.effective_storage == "embedded":
        kb.close()  # the subprocess is the writer now
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(values)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert _ids(other, "Reklamation") == ["r1"]


def test_generation_store_counts_per_layer_and_keeps_a_cursor(tmp_path: Path) -> None:
    gens = GenerationStore(tmp_path / "g.sqlite")
    assert gens.generation("kern") == Generation(0, 0) and gens.cursor() is None
    gens.bump(["kern", "kern", "erweitert"])
    gens.bump(["kern"])
    assert gens.generations(["kern", "erweitert", "x"]) == ((0, 2), (0, 1), (0, 0))
    gens.set_epoch(3)
    gens.mark_seen([("e1", 10), ("e2", 20)], prune_before=15)
    assert gens.unseen(["e1", "e2", "e3"]) == ["e1", "e3"]
    gens.set_cursor(99)
    gens.close()
    again = GenerationStore(tmp_path / "g.sqlite")
    assert again.generation("kern") == Generation(3, 2) and again.cursor() == 99
    again.close()


def test_log_entries_are_unique_ordered_split_and_compacted(kb: KnowledgeBase) -> None:
    a, b = WriteLog(kb.store.writelog()), WriteLog(kb.store.writelog())
    first = a.append("kern", "upsert", [f"id{i}" for i in range(2500)], 0)
    assert [len(e.ids) for e in first] == [1000, 1000, 500]
    second = b.append("kern", "delete", ["x"], 0)
    entries = a.since(0, 0)
    assert [e.id for e in entries] == [e.id for e in first + second]
    a.load_ids(entries)
    assert entries[-1].ids == ["x"] and entries[0].ids[0] == "id0"
    assert a.since(0, 1) == []  # another epoch
    assert a.compact(second[0].ts) == 3
    assert [e.id for e in a.since(0, 0)] == [second[0].id]


def test_a_process_behind_the_horizon_rebuilds(kb: KnowledgeBase, other: KnowledgeBase) -> None:
    kb.add("kern", ["Wareneingangsprüfung AQL"], ids=["w1"])
    assert _ids(other, "Wareneingangsprüfung") == ["w1"]
    if kb.settings.effective_storage != "server":
        pytest.skip("embedded mode has no log: the writer updates the shared index itself")
    rebuilds = other.freshness.stats["rebuilds"]
    other.freshness.gens.set_cursor(1)  # last caught up in 1970: the log may have lost entries
    kb.delete_ids("kern", ["w1"])
    assert _ids(other, "Wareneingangsprüfung") == []
    assert other.freshness.stats["rebuilds"] == rebuilds + 1


def test_freshness_interval_trades_staleness_for_round_trips(
    kb: KnowledgeBase, other: KnowledgeBase
) -> None:
    other.settings = other.settings.model_copy(update={"freshness_interval": 3600.0})
    kb.add("kern", ["Messsystemanalyse Verfahren 1"], ids=["m1"])
    other.catch_up(force=True)
    assert _ids(other, "Messsystemanalyse") == ["m1"]
    kb.delete_ids("kern", ["m1"])
    if kb.settings.effective_storage == "server":
        # within the interval the other machine does not ask the server: its cached answer
        # is served, stale (the documented price of OSP_FRESHNESS_INTERVAL > 0)
        assert _ids(other, "Messsystemanalyse") == ["m1"]
        other.catch_up(force=True)
    # embedded: the generation file is shared, so the reader sees the write at once
    assert _ids(other, "Messsystemanalyse") == []
