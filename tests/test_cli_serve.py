"""`osp token` / `osp user` in-process, and `osp serve`'s refusals (no server is started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osprag.cli import main
from osprag.config import Settings
from osprag.server.auth import TokenFile, TokenStore, hash_token


def _osp(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_token_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    code, out, _ = _osp(
        capsys,
        "--data-dir",
        data,
        "token",
        "create",
        "qm",
        "--role",
        "editor",
        "--clearance",
        "3",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    value = created["token"]
    assert value.startswith("osp_") and len(value) > 40
    stored = (tmp_path / "data" / "tokens.toml").read_text()
    assert value not in stored and hash_token(value) in stored  # only the hash is kept
    assert (tmp_path / "data" / "tokens.toml").stat().st_mode & 0o777 == 0o600
    settings = Settings(data_dir=tmp_path / "data")
    entry = TokenStore(settings).find(value)
    assert entry is not None and entry.role == "editor" and entry.clearance == 3
    assert TokenStore(settings).find(value + "x") is None

    code, _, err = _osp(capsys, "--data-dir", data, "token", "create", "qm", "--clearance", "1")
    assert code == 4 and "exists" in err
    code, out, _ = _osp(capsys, "--data-dir", data, "token", "list", "--json")
    assert json.loads(out) == [{"name": "qm", "role": "editor", "clearance": 3, "proxy": False}]
    code, _, err = _osp(capsys, "--data-dir", data, "token", "create", "x", "--clearance", "7")
    assert code == 2  # click's usage error: clearance outside 1..4

    assert (
        _osp(capsys, "--data-dir", data, "user", "add", "Anna@Example.com", "--clearance", "2")[0]
        == 0
    )
    assert TokenFile.load(tmp_path / "data" / "tokens.toml").users[0].email == "anna@example.com"
    assert _osp(capsys, "--data-dir", data, "user", "add", "kein-mail", "--clearance", "2")[0] == 4
    assert _osp(capsys, "--data-dir", data, "user", "remove", "anna@example.com")[0] == 0

    assert _osp(capsys, "--data-dir", data, "token", "revoke", "qm")[0] == 0
    assert TokenStore(settings).find(value) is None
    code, _, err = _osp(capsys, "--data-dir", data, "token", "revoke", "qm")
    assert code == 5 and "no token" in err


def test_broken_tokens_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tokens.toml").write_text('[[tokens]]\nname = "a"\nsha256 = "zz"\n')
    code, _, err = _osp(capsys, "--data-dir", str(tmp_path / "data"), "token", "list")
    assert code == 3 and "sha256 must be 64 hex digits" in err


def test_serve_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    code, _, err = _osp(capsys, "--data-dir", data, "serve", "--host", "0.0.0.0")
    assert code == 3 and "without a token" in err
    code, _, err = _osp(capsys, "--data-dir", data, "serve", "--workers", "2")
    assert code == 3 and "--workers > 1 needs a Chroma server" in err
