"""CSV batch import as the production guide does it: one row → one record.

Columns ``id`` and ``text`` (required), ``doc_type``, ``version``, ``status`` and any other
column → metadata. Rows are validated one by one so a bad row is reported with its line number
and the rest are imported; writes go in batches and are idempotent (upsert by id).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprag.errors import IngestError, InvalidMetadata
from osprag.metadata import validate_metadata

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase

BATCH = 256


@dataclass
class CsvImportReport:
    file: str
    layer: str
    total: int = 0
    added: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.added / self.total if self.total else 0.0

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return 1 if self.added else 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "layer": self.layer,
            "total": self.total,
            "added": self.added,
            "failed": self.failed,
            "success_rate": round(self.success_rate, 4),
            "errors": self.errors,
        }


def _open_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IngestError(exc.strerror or str(exc), path=str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IngestError("not UTF-8 text", path=str(path), hint="save the CSV as UTF-8") from None
    # The header line decides: German exports use ";" and their cells are full of decimal commas,
    # which fools csv.Sniffer.
    first = text.split("\n", 1)[0]
    delimiter = max(";\t,", key=first.count)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = list(reader)
    if not rows:
        raise IngestError("empty CSV", path=str(path))
    header = [h.strip() for h in rows[0]]
    if "text" not in header:
        raise IngestError("CSV needs a 'text' column (and ideally 'id')", path=str(path))
    return header, [(i + 2, r) for i, r in enumerate(rows[1:]) if any(c.strip() for c in r)]


def import_csv(kb: KnowledgeBase, path: Path, layer: str) -> CsvImportReport:
    cfg = kb.settings.layer(layer)
    header, rows = _open_rows(path)
    report = CsvImportReport(file=str(path), layer=layer, total=len(rows))
    batch_ids: list[str] = []
    batch_texts: list[str] = []
    batch_metas: list[dict[str, Any]] = []

    def flush() -> None:
        if batch_ids:
            kb.upsert(layer, list(batch_texts), ids=list(batch_ids), metadatas=list(batch_metas))
            report.added += len(batch_ids)
            batch_ids.clear()
            batch_texts.clear()
            batch_metas.clear()

    seen: set[str] = set()
    for line, row in rows:
        if len(row) != len(header):
            report.failed += 1
            report.errors.append(
                {"line": line, "reason": f"{len(row)} fields, header has {len(header)}"}
            )
            continue
        record = dict(zip(header, (c.strip() for c in row), strict=True))
        text = record.pop("text", "")
        rid = record.pop("id", "") or None
        if not text:
            report.failed += 1
            report.errors.append({"line": line, "reason": "empty text"})
            continue
        if rid is not None and rid in seen:
            report.failed += 1
            report.errors.append({"line": line, "reason": f"duplicate id {rid!r}"})
            continue
        try:
            meta = validate_metadata(
                {k: v for k, v in record.items() if v != ""},
                default_access_level=cfg.default_access_level,
                where=f"line {line}",
            )
        except InvalidMetadata as exc:
            report.failed += 1
            report.errors.append({"line": line, "reason": str(exc)})
            continue
        if rid is None:
            from osprag.ids import default_id

            rid = default_id(layer, text, meta)
        seen.add(rid)
        batch_ids.append(rid)
        batch_texts.append(text)
        batch_metas.append(meta)
        if len(batch_ids) >= BATCH:
            flush()
    flush()
    return report
