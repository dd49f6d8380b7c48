"""CSV batch import: valid rows in, bad rows reported by line, idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from osprag import KnowledgeBase
from osprag.errors import IngestError

CSV = """id;text;doc_type;version;status;Zugriff;access_level
a1;Die Crimphöhe für 0,35 mm² beträgt 0,80 ± 0,03 mm.;control_plan;2.1;AKTIV;x;2
a2;Auszugskraft 0,5 mm² mindestens 70 N.;work_instruction;1.0;AKTIV;y;L1
a3;;work_instruction;1.0;AKTIV;;1
a4;Ungültige Stufe;work_instruction;1.0;AKTIV;;L9
a1;Doppelte ID;x;1;AKTIV;;1
a5;Zu wenige Felder
"""


def test_csv_import(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "import.csv"
    path.write_text(CSV, encoding="utf-8")
    report = kb.import_csv(path, "kern")
    assert (report.total, report.added, report.failed) == (6, 2, 4)
    assert report.exit_code == 1
    assert {e["line"] for e in report.errors} == {4, 5, 6, 7}
    rec = kb.get("kern", ids=["a1"])[0]
    assert rec.metadata["version"] == "2.1" and rec.metadata["access_level"] == 2
    assert rec.metadata["doc_type"] == "control_plan" and rec.metadata["Zugriff"] == "x"
    again = kb.import_csv(path, "kern")
    assert again.added == 2 and kb.count("kern") == 2


def test_csv_without_text_column(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(IngestError, match="text"):
        kb.import_csv(path, "kern")
