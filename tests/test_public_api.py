"""The declared public API stays sorted and importable; the error tree is consistent."""

from __future__ import annotations

import osprag
from osprag import errors


def test_all_sorted_and_exported() -> None:
    assert osprag.__all__ == sorted(osprag.__all__)
    for name in osprag.__all__:
        assert hasattr(osprag, name), name


def test_error_tree() -> None:
    codes = [e.code for e in errors.ALL_ERRORS]
    assert len(codes) == len(set(codes))
    for err in errors.ALL_ERRORS:
        assert issubclass(err, errors.OspragError)
        assert 400 <= err.http_status < 600
        assert err.exit_code not in (0, 2)
    e = errors.LayerNotFound("unknown layer 'x'", hint="known layers: kern")
    assert e.to_dict() == {
        "error": "layer_not_found",
        "message": "unknown layer 'x' — known layers: kern",
    }


def test_only_store_imports_chromadb() -> None:
    from pathlib import Path

    src = Path(osprag.__file__).parent
    offenders = [
        p.name
        for p in src.rglob("*.py")
        if p.name != "store.py"
        and ("import chromadb" in p.read_text() or "from chromadb" in p.read_text())
    ]
    assert offenders == []


def test_readme_exit_code_table_matches_errors() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): line
        for line in readme.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    for err in errors.ALL_ERRORS:
        assert f"`{err.__name__}`" in rows[str(err.exit_code)], err.__name__
