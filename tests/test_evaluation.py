"""``osp eval`` / ``osprag.evaluation``: metrics, pooling, run file, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osprag import InvalidInput
from osprag.cli import main
from osprag.embedding import Embedder
from osprag.evaluation import evaluate, mrr_at, ndcg_at, pool_documents_scored, recall_at

from .conftest import base_settings

DOCS = [
    ("d1", "Crimpen", "Die Crimphöhe für 0,35 mm² beträgt 0,80 ± 0,03 mm. " * 30),
    ("d2", "Auszugskraft", "Die Auszugskraft bei 0,5 mm² muss mindestens 70 N betragen."),
    ("d3", "8D", "Reklamationen: D3 Sofortmaßnahmen binnen 24 Stunden, D4 in 10 Tagen."),
    ("d4", "Audit", "VDA 6.3 Prozessaudit, Prozesselement P6 Serienfertigung."),
    ("d5", "ESD", "Personenerdungsprüfung am Tester vor dem Betreten der EPA."),
]
QUERIES = {
    "q1": "Crimphöhe 0,35 mm²",
    "q2": "Auszugskraft 70 N",
    "q3": "Sofortmaßnahmen D3",
    "q4": "Prozesselement P6",
    "q5": "unjudged question",
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    base = tmp_path / "tiny-set"
    base.mkdir()
    with (base / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for did, title, text in DOCS:
            fh.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with (base / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (base / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td4\t1\n",
        encoding="utf-8",
    )
    return base


def test_metrics_by_hand() -> None:
    rels = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "c"], rels) == pytest.approx(1.0)
    assert ndcg_at(["c", "a"], rels) == pytest.approx((1 / 1.5849625) / (1 + 1 / 1.5849625))
    assert recall_at(["c", "a"], rels) == 0.5
    assert mrr_at(["c", "x", "b"], rels) == pytest.approx(1 / 3)
    assert mrr_at(["c"] * 10 + ["a"], rels) == 0.0  # only the first 10 count
    pooled = pool_documents_scored([("a", 0.2), ("b", 0.9), ("a", 0.95), ("c", 0.1)])
    assert pooled == [("a", 0.95), ("b", 0.9), ("c", 0.1)]


def test_evaluate_pools_chunks_and_writes_a_trec_run(
    dataset: Path, tmp_path: Path, embedder: Embedder
) -> None:
    settings = base_settings(tmp_path / "s", chunk_tokens=64)
    run = tmp_path / "out" / "run.txt"
    report = evaluate(dataset, settings=settings, mode="lexical", run_out=run, embedder=embedder)
    assert report.queries == 4 and report.documents == 5
    assert report.chunks > 5  # d1 is split by the chunker: pooling is exercised
    assert report.ndcg_at_10 == pytest.approx(1.0)
    assert report.recall_at_10 == 1.0 and report.mrr_at_10 == 1.0
    lines = [line.split() for line in run.read_text(encoding="utf-8").splitlines()]
    assert all(len(parts) == 6 and parts[1] == "Q0" for parts in lines)
    by_query: dict[str, list[list[str]]] = {}
    for parts in lines:
        by_query.setdefault(parts[0], []).append(parts)
    assert set(by_query) == {"q1", "q2", "q3", "q4"}
    assert by_query["q1"][0][2] == "d1" and by_query["q1"][0][3] == "1"
    assert {p[2] for p in lines} <= {d for d, _, _ in DOCS}  # corpus ids, not chunk ids
    assert len({p[2] for p in by_query["q1"]}) == len(by_query["q1"])  # one line per document
    dense = evaluate(dataset, settings=settings, mode="dense", embedder=embedder)
    assert 0.0 < dense.ndcg_at_10 <= 1.0 and dense.model.endswith("all-MiniLM-L6-v2")


def test_bad_dataset_is_one_clear_error(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(InvalidInput, match="has no corpus.jsonl"):
        evaluate(tmp_path / "nothing-here", settings=base_settings(tmp_path))
    (dataset / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="qrels.tsv:2"):
        evaluate(dataset, settings=base_settings(tmp_path))


def test_cli_eval_json(
    dataset: Path,
    tmp_path: Path,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OSP_EMBEDDING_BACKEND", "torch")
    monkeypatch.setenv("OSP_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run.trec"
    code = main(["eval", str(dataset), "--mode", "hybrid", "--run-out", str(run), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["mode"] == "hybrid" and data["queries"] == 4
    assert data["alpha"] == 0.2  # the per-model default (search/fusion.py)
    assert data["ndcg_at_10"] > 0.9 and run.is_file()
    code = main(["eval", str(tmp_path / "missing"), "--json"])
    assert code == 4 and json.loads(capsys.readouterr().out)["error"] == "invalid_input"
