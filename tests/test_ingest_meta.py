"""Metadata extraction from header lines, front matter, filenames and folder defaults."""

from __future__ import annotations

from pathlib import Path

from osprag.ingest.meta import (
    detect_language,
    folder_defaults,
    looks_like_header_line,
    map_keys,
    parse_filename,
    parse_header_line,
)
from osprag.metadata import validate_metadata


def test_header_line() -> None:
    line = (
        "Version: 2.1 | TAG: [QM][REK] | Autor: AL | Zugriff: L3 | Status: AKTIV | "
        "gültig ab: 2025-03-01 | Freigabe: QMB"
    )
    assert looks_like_header_line(line)
    meta = parse_header_line(line)
    assert meta == {
        "version": "2.1",
        "tag": "QM",
        "sub_tag": "REK",
        "author": "AL",
        "access_level": "L3",
        "status": "AKTIV",
        "valid_from": "2025-03-01",
        "freigabe": "QMB",
    }
    clean = validate_metadata(meta, default_access_level=4)
    assert clean["access_level"] == 3 and clean["valid_from"] == "2025-03-01"


def test_not_a_header_line() -> None:
    assert not looks_like_header_line("Die Crimphöhe beträgt 0,80 mm.")
    assert not looks_like_header_line("Hinweis: siehe Abschnitt 3")


def test_front_matter_keys_mapped() -> None:
    meta = map_keys(
        {
            "Revision": 3,
            "Zugriffsstufe": 2,
            "Gültig ab": "01.04.2025",
            "tags": ["PRD", "CRM"],
            "Dokumenttyp": "Arbeitsanweisung",
            "nested": {"a": 1},
        }
    )
    assert meta == {
        "version": 3,
        "access_level": 2,
        "valid_from": "01.04.2025",
        "tag": "PRD",
        "sub_tag": "CRM",
        "doc_type": "Arbeitsanweisung",
    }


def test_filename_convention() -> None:
    assert parse_filename(Path("QM_REK_8D-Reklamationsprozess.md")) == {
        "tag": "QM",
        "sub_tag": "REK",
        "title": "8D Reklamationsprozess",
    }
    assert parse_filename(Path("notes.md")) == {}
    assert parse_filename(Path("Qm_rek_x.md")) == {}


def test_language() -> None:
    assert (
        detect_language("Die Crimphöhe wird bei jedem Los geprüft und ist zu dokumentieren.")
        == "de"
    )
    assert (
        detect_language("The control plan shall be reviewed for each manufacturing site.") == "en"
    )
    assert detect_language("0,35 mm²") is None


def test_folder_defaults_nearest_wins(tmp_path: Path) -> None:
    (tmp_path / ".osp.toml").write_text('access_level = 2\ncategory = "QM"\n')
    sub = tmp_path / "geheim"
    sub.mkdir()
    (sub / ".osp.toml").write_text('[metadata]\nZugriff = "L4"\n')
    assert folder_defaults(tmp_path / "a.md", tmp_path) == {"access_level": 2, "category": "QM"}
    assert folder_defaults(sub / "b.md", tmp_path) == {"access_level": "L4", "category": "QM"}
