"""``osp tune``: recall against exact search over ef_search, applied so a new client uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from osprag import InvalidInput, KnowledgeBase, Settings
from osprag.cli import cli
from osprag.embedding import Embedder
from osprag.tune import tune_layer


def _random_layer(kb: KnowledgeBase, n: int = 300) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    kb.add(
        "kern",
        [f"Text {i}" for i in range(n)],
        ids=[f"r{i}" for i in range(n)],
        metadatas=[{"access_level": 1}] * n,
        embeddings=vectors,
    )


def test_tune_measures_grid_and_applies(kb: KnowledgeBase) -> None:
    _random_layer(kb)
    report = tune_layer(kb, "kern", grid=(10, 200), samples=40, target=0.99)
    server = kb.settings.effective_storage == "server"
    assert [p.ef_search for p in report.points] == ([100] if server else [10, 200])
    assert all(0 <= p.recall_at_10 <= 1 for p in report.points)
    if server:
        assert any("server mode" in a for a in report.advice)
        return
    low, high = report.points
    assert high.recall_at_10 >= low.recall_at_10 and high.recall_at_10 >= 0.99
    assert report.chosen_ef_search in (10, 200) and report.exact_in_memory
    col = kb.collection_for("kern")
    assert col is not None and col.index_config().ef_search == report.chosen_ef_search  # type: ignore[union-attr]
    # a fresh process reads the stored value
    with KnowledgeBase.open(kb.settings.model_copy(), read_only=True) as other:
        again = other.collection_for("kern")
        assert again is not None
        assert again.index_config().ef_search == report.chosen_ef_search  # type: ignore[union-attr]


def test_tune_dry_run_keeps_ef_and_bad_input(kb: KnowledgeBase) -> None:
    _random_layer(kb, 60)
    report = tune_layer(kb, "kern", grid=(10, 20), samples=10, apply=False)
    assert not report.applied and report.chosen_ef_search in (10, 20, 100)
    col = kb.collection_for("kern")
    assert col is not None and col.index_config().ef_search == 100  # type: ignore[union-attr]
    with pytest.raises(InvalidInput):
        tune_layer(kb, "kern", target=1.5)


def test_tune_cli_json(
    settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    if settings.effective_storage == "server":
        pytest.skip("the CLI path is the same; server mode is covered above")
    with KnowledgeBase.open(settings, embedder=embedder) as kb:
        _random_layer(kb, 80)
    runner = CliRunner()
    args = ["--data-dir", str(settings.data_dir), "tune", "--layer", "kern", "--ef", "10,50"]
    monkeypatch.setenv("OSP_EMBEDDING_BACKEND", "torch")
    res = runner.invoke(cli, [*args, "--samples", "20", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["layers"][0]["layer"] == "kern" and len(data["layers"][0]["points"]) == 2
    bad = runner.invoke(cli, [*args[:-1], "x,y"])
    assert bad.exit_code == 4 and "comma-separated" in bad.output
