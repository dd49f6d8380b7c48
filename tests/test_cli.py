"""The osp CLI, in-process (fast) plus a few real subprocess smoke tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    """Run `osp ARGS` in-process against this test's store; returns (code, stdout, stderr)."""
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


def test_add_query_json_roundtrip(osp) -> None:  # type: ignore[no-untyped-def]
    assert osp("init")[0] == 0
    code, out, _ = osp(
        "add",
        "Die Crimphöhe 0,35 mm² beträgt 0,80 ± 0,03 mm",
        "-l",
        "kern",
        "-m",
        "access_level=L2",
        "-m",
        "version=2.1",
        "--id",
        "k1",
        "--json",
    )
    assert code == 0 and json.loads(out)["ids"] == ["k1"]
    osp(
        "add",
        "VDA 6.3 P6 Prozessanalyse Serienfertigung",
        "-l",
        "erweitert",
        "-m",
        "access_level=1",
    )
    code, out, _ = osp("query", "Crimphöhe", "Toleranz", "--json", "-n", "3")
    data = json.loads(out)
    assert code == 0
    assert data["query"] == "Crimphöhe Toleranz"
    assert data["hits"][0]["id"] == "k1" and data["hits"][0]["layer"] == "kern"
    assert data["hits"][0]["metadata"] == {"access_level": 2, "version": "2.1"}
    assert set(data["hits"][0]) == {
        "id",
        "layer",
        "text",
        "metadata",
        "distance",
        "score",
        "rank",
        "relevance",
    }
    code, out, _ = osp("query", "Crimphöhe", "--clearance", "1", "--json")
    assert [h["layer"] for h in json.loads(out)["hits"]] == ["erweitert"]
    code, out, _ = osp("query", "Crimphöhe")
    assert code == 0 and "kern" in out and "score" in out
    code, out, _ = osp("get", "-l", "kern", "--id", "k1", "--json")
    assert json.loads(out)[0]["text"].startswith("Die Crimphöhe")
    code, out, _ = osp("stats", "--json")
    assert {layer["layer"]: layer["count"] for layer in json.loads(out)["layers"]} == {
        "kern": 1,
        "erweitert": 1,
    }
    code, out, _ = osp("reindex", "--lexical", "--json")
    assert code == 0 and json.loads(out) == {"lexical": {"kern": 1, "erweitert": 1}}
    code, out, _ = osp("query", "Crimphöhe", "--mode", "lexical", "--json")
    assert {h["id"] for h in json.loads(out)["hits"]} >= {"k1"}
    code, out, _ = osp("delete", "-l", "kern", "--where", '{"version": "2.1"}', "--json")
    assert json.loads(out) == {"layer": "kern", "deleted": 1}


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("query", "x", "-l", "archiv"), 5, "unknown layer 'archiv'"),
        (("query", "x", "--where", "{bad json"), 4, "not valid JSON"),
        (("query", "x", "--where", '{"version": {"$gte": "2"}}'), 4, "needs a number"),
        (("query", "x", "-n", "0"), 4, "n_results"),
        (("add", "x", "-l", "kern", "-m", "noequals"), 4, "key=value"),
        (("add", "x", "-l", "kern", "-m", "access_level=L9"), 4, "access_level"),
        (("drop", "kern"), 4, "--yes"),
        (("delete", "-l", "kern"), 4, "delete needs"),
    ],
)
def test_errors_are_one_line_with_exit_code(osp, args, code, fragment) -> None:  # type: ignore[no-untyped-def]
    got, out, err = osp(*args)
    assert got == code
    assert fragment in err
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_json_error_shape(osp) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = osp("query", "x", "-l", "archiv", "--json")
    assert code == 5
    assert json.loads(out) == {
        "error": "layer_not_found",
        "message": "unknown layer 'archiv' — known layers: kern, erweitert",
    }


def test_usage_error_exit_2(osp) -> None:  # type: ignore[no-untyped-def]
    assert osp("query")[0] == 2
    assert osp("no-such-command")[0] == 2


def test_duplicate_add_then_upsert(osp) -> None:  # type: ignore[no-untyped-def]
    assert osp("add", "a", "-l", "kern", "--id", "x")[0] == 0
    code, _, err = osp("add", "b", "-l", "kern", "--id", "x")
    assert code == 4 and "already exist" in err and "upsert" in err
    assert osp("add", "b", "-l", "kern", "--id", "x", "--upsert")[0] == 0


def test_config_markdown(osp) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = osp("config", "--markdown")
    assert code == 0 and "`OSP_DATA_DIR`" in out


def test_config_error_exit_3(osp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OSP_SPACE", "manhattan")
    code, _, err = osp("layers")
    assert code == 3 and "space" in err


# -------------------------------------------------------------- real subprocess smoke tests


def _osp(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "osp"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)


def test_subprocess_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    env.update(OSP_DATA_DIR=str(tmp_path / "d"), OSP_EMBEDDING_BACKEND="torch")
    assert _osp(["--version"], env).stdout.startswith("osp, version")
    r = _osp(
        [
            "add",
            "Prüfmittel werden jährlich kalibriert.",
            "-l",
            "erweitert",
            "-m",
            "access_level=1",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    r = _osp(["query", "Kalibrierung Prüfmittel", "--json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hits"][0]["layer"] == "erweitert"
    assert "Loading weights" not in r.stderr


def test_subprocess_error_and_debug(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    env.update(OSP_DATA_DIR=str(tmp_path / "d"), OSP_CHROMA_URL="http://127.0.0.1:9")
    r = _osp(["layers"], env)
    assert r.returncode == 7
    assert r.stderr.strip().count("\n") == 0 and "127.0.0.1:9" in r.stderr
    env["OSP_DEBUG"] = "1"
    assert "Traceback" in _osp(["layers"], env).stderr


def test_ingest_json_and_exit_codes(osp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "QM_REK_8D.md").write_text(
        "# 8D\n\nVersion: 1.2 | Zugriff: L2 | Status: AKTIV\n\nD3 binnen 24 Stunden.\n",
        encoding="utf-8",
    )
    code, out, _ = osp("ingest", str(docs), "--layer", "kern", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["counts"]["added"] == 1
    code, out, _ = osp("ingest", str(docs), "--layer", "kern", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["counts"] == {
        "added": 1,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "failed": 0,
        "skipped": 0,
    }
    assert report["files"][0]["source"] == "QM_REK_8D.md" and report["chunks_written"] >= 1
    (docs / "kaputt.txt").write_bytes(b"\x00\x01\x02" * 50)
    code, out, _ = osp("ingest", str(docs), "--layer", "kern", "--json")
    assert code == 1
    assert json.loads(out)["counts"]["failed"] == 1
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.txt").write_bytes(b"\x00" * 10)
    code, _, _ = osp("ingest", str(only_bad), "--layer", "kern")
    assert code == 2
    code, out, _ = osp("query", "Sofortmaßnahmen D3", "--json")
    hit = json.loads(out)["hits"][0]
    assert hit["metadata"]["source"] == "QM_REK_8D.md" and hit["metadata"]["version"] == "1.2"
