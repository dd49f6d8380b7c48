"""`osp query` options for validity, routing, glossary and layer minimums; `osp stats` cache."""

from __future__ import annotations

import json

import pytest

from osprag import Settings
from osprag.cli import main
from osprag.embedding import Embedder


@pytest.fixture
def osp(
    settings: Settings,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OSP_EMBEDDING_BACKEND", "torch")
    monkeypatch.setenv("OSP_CACHE_DIR", str(settings.cache_dir))
    if settings.effective_storage == "embedded":
        monkeypatch.setenv("OSP_DATA_DIR", str(settings.data_dir))
    else:
        monkeypatch.setenv("OSP_CHROMA_URL", str(settings.chroma_url))
        monkeypatch.setenv("OSP_CHROMA_DATABASE", settings.chroma_database)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_history_revision_and_valid_from(osp) -> None:  # type: ignore[no-untyped-def]
    for text, meta in [
        ("Lenkungsplan Crimpen aktuell", ["status=AKTIV", "version=3.1", "valid_from=2025-03-01"]),
        ("Lenkungsplan Crimpen alt", ["status=OBSOLET", "version=2.0", "valid_from=2019-01-01"]),
    ]:
        args = ["add", text, "-l", "kern"]
        for m in meta:
            args += ["-m", m]
        assert osp(*args)[0] == 0
    code, out, _ = osp("query", "Lenkungsplan", "--mode", "lexical")
    assert code == 0
    assert "rev 3.1 · gültig ab 2025-03-01" in out and "rev 2.0" not in out
    code, out, _ = osp("query", "Lenkungsplan", "--mode", "lexical", "--history", "--json")
    versions = sorted(h["metadata"]["version"] for h in json.loads(out)["hits"])
    assert versions == ["2.0", "3.1"]


def test_tags_glossary_and_layer_min_switches(osp) -> None:  # type: ignore[no-untyped-def]
    osp("add", "Erstmusterprüfbericht Kabelsatz", "-l", "kern", "-m", "tag=QM", "--id", "a")
    osp("add", "Kabelsatz Verpackung", "-l", "erweitert", "-m", "tag=LOG", "--id", "b")
    code, out, _ = osp("query", "[QM]", "Kabelsatz", "--mode", "lexical", "--json")
    assert code == 0 and [h["id"] for h in json.loads(out)["hits"]] == ["a"]
    code, out, _ = osp("query", "[QM] Kabelsatz", "--no-tags", "--mode", "lexical", "--json")
    assert sorted(h["id"] for h in json.loads(out)["hits"]) == ["a", "b"]
    code, out, _ = osp("query", "EMPB", "--mode", "lexical", "--json")
    assert [h["id"] for h in json.loads(out)["hits"]] == ["a"]
    code, out, _ = osp("query", "EMPB", "--mode", "lexical", "--no-glossary", "--json")
    assert json.loads(out)["hits"] == []
    code, out, _ = osp("query", "Kabelsatz", "-n", "1", "--layer-min", "erweitert=1", "--json")
    assert [h["layer"] for h in json.loads(out)["hits"]] == ["erweitert"]
    code, _, err = osp("query", "Kabelsatz", "--layer-min", "erweitert")
    assert code == 4 and "kern=2" in err


def test_stats_show_the_query_cache(osp) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = osp("stats", "--json")
    assert code == 0
    cache = json.loads(out)["query_cache"]
    assert cache["enabled"] is True and cache["hit_rate"] == 0.0
    code, out, _ = osp("stats")
    assert "query cache:" in out
