"""``osp doctor``: named health checks, each with a status (ok / warn / fail) and a remedy.

It replaces the guide's troubleshooting snippets (wait for the server, safe get collection,
debug empty results, dimension check) with checks that say what to do. It never writes to the
store: SQLite is opened read-only, the lexical index is only counted, nothing is rebuilt.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from osprag.config import Settings
from osprag.errors import OspragError
from osprag.locking import is_locked, read_holder

Status = Literal["ok", "warn", "fail"]
_HNSW_FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin")


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    remedy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == "fail" for c in self.checks) else 0

    def add(self, name: str, status: Status, detail: str, remedy: str = "") -> None:
        self.checks.append(Check(name, status, detail, remedy))

    def to_dict(self) -> dict[str, Any]:
        worst = (
            "fail"
            if self.exit_code
            else ("warn" if any(c.status == "warn" for c in self.checks) else "ok")
        )
        return {"status": worst, "checks": [c.to_dict() for c in self.checks]}


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def hnsw_files_problem(folder: Path) -> str | None:
    """Why a flushed HNSW segment folder is torn, or None when its files are consistent.

    chromadb's hnswlib header starts with a format version (1), then offsetLevel0,
    max_elements, cur_element_count, size_data_per_element; ``data_level0.bin`` holds
    count × size bytes and ``length.bin`` 4 bytes per element.
    """
    if not folder.is_dir():
        return f"segment folder {folder.name} is missing"
    missing = [n for n in _HNSW_FILES if not (folder / n).is_file()]
    if missing:
        return f"segment {folder.name} lacks {', '.join(missing)}"
    head = (folder / "header.bin").read_bytes()
    if len(head) < 36:
        return f"segment {folder.name} has a truncated header"
    version, _offset, _max, count, per = struct.unpack("<IQQQQ", head[:36])
    if version != 1:
        return None  # an unknown layout: the load probe decides
    level0 = (folder / "data_level0.bin").stat().st_size
    if level0 != count * per:
        return f"segment {folder.name}: data_level0.bin is {level0} bytes, expected {count * per}"
    if (folder / "length.bin").stat().st_size != count * 4:
        return f"segment {folder.name}: length.bin does not match {count} elements"
    return None


def run_doctor(
    settings_factory: Callable[[], Settings],
    *,
    embedder_factory: Callable[[Settings], Any] | None = None,
) -> DoctorReport:
    """Run every check; later checks are skipped (not failed) when a prerequisite fails."""
    report = DoctorReport()
    try:
        settings = settings_factory()
    except OspragError as exc:
        report.add("settings", "fail", exc.message, exc.hint or "fix OSP_* or osprag.toml")
        return report
    report.add(
        "settings",
        "ok",
        f"storage {settings.effective_storage}, model {settings.embedding_model}, "
        f"layers {', '.join(settings.ordered_layers())}",
    )
    if settings.effective_storage == "embedded":
        _check_data_dir(report, settings)
    store = _check_chroma(report, settings)
    if store is None:
        return report
    try:
        _check_layers(report, settings, store, embedder_factory)
        if settings.effective_storage == "embedded":
            _check_sqlite(report, store)
        _check_disk(report, settings)
        _check_memory(report)
        _check_backups(report, settings)
    finally:
        store.close()
    return report


def _check_data_dir(report: DoctorReport, settings: Settings) -> None:
    data = settings.data_dir
    if not data.exists():
        report.add(
            "data_dir",
            "warn",
            f"{data} does not exist yet",
            "run `osp init` or check OSP_DATA_DIR",
        )
        return
    if not os.access(data, os.W_OK):
        report.add(
            "data_dir", "fail", f"{data} is not writable", "fix its permissions or OSP_DATA_DIR"
        )
        return
    holder = read_holder(data) if is_locked(data) else None
    who = (
        f"writer: pid {holder.get('pid')} ({holder.get('command')}) since {holder.get('since')}"
        if holder
        else "no writer holds the lock"
    )
    report.add("data_dir", "ok", f"{data} writable; {who}")


def _check_chroma(report: DoctorReport, settings: Settings) -> Any:
    from osprag.store import Store

    try:
        store = Store(settings)
        store.heartbeat()
        version = store.version()
    except OspragError as exc:
        report.add("chroma", "fail", exc.message, exc.hint or "check the store settings")
        return None
    where = f"{store.mode} at {store.where}"
    report.add("chroma", "ok", f"{where}; chromadb {store.client_version()}, server {version}")
    return store


def _check_layers(
    report: DoctorReport,
    settings: Settings,
    store: Any,
    embedder_factory: Callable[[Settings], Any] | None,
) -> None:
    from osprag.embedding import ModelIdentity, create_embedder

    try:
        aliases = store.aliases()
    except OspragError as exc:
        report.add("registry", "fail", exc.message, exc.hint or "")
        return
    configured: ModelIdentity | None = None
    try:
        configured = (embedder_factory or create_embedder)(settings).identity
    except OspragError as exc:
        report.add("model", "fail", exc.message, exc.hint or "")
    if configured is not None:
        report.add("model", "ok", f"{configured.name} ({configured.dimension}d)")
    lexical = _lexical_counts(settings)
    for layer in settings.ordered_layers():
        name = aliases.get(layer)
        col = store.get_collection(name) if name else None
        if col is None:
            report.add(
                f"layer:{layer}",
                "warn",
                "no collection yet (empty layer)",
                f"ingest documents: osp ingest DIR --layer {layer}",
            )
            continue
        count = col.count()
        stored = ModelIdentity.from_metadata(col.metadata)
        if stored is None:
            report.add(
                f"layer:{layer}",
                "fail",
                f"{col.name} has no model identity",
                "import it with `osp import` instead of pointing a layer at it",
            )
            continue
        if configured is not None and stored.differences(configured):
            diffs = ", ".join(stored.differences(configured))
            report.add(
                f"layer:{layer}",
                "fail",
                f"built with {stored.name} ({stored.dimension}d), configured "
                f"{configured.name} ({configured.dimension}d); differs in {diffs}",
                f"set OSP_EMBEDDING_MODEL={stored.name} or `osp reindex --model {configured.name}`",
            )
        elif count == 0:
            report.add(
                f"layer:{layer}",
                "warn",
                f"{col.name} is empty",
                f"ingest documents: osp ingest DIR --layer {layer}",
            )
        else:
            report.add(
                f"layer:{layer}",
                "ok",
                f"{col.name}: {count} chunks, {stored.name} ({stored.dimension}d)",
            )
        _check_index(report, layer, store, col, count, stored.dimension)
        if lexical is not None:
            have = lexical.get(layer, 0)
            if have != count:
                report.add(
                    f"lexical:{layer}",
                    "warn",
                    f"lexical index has {have} chunks, Chroma {count}",
                    f"`osp reindex --lexical --layer {layer}` (or let the next query rebuild it)",
                )
            else:
                report.add(f"lexical:{layer}", "ok", f"{have} chunks in sync")


def _lexical_counts(settings: Settings) -> dict[str, int] | None:
    """Counts from the lexical index file without creating it (doctor never writes)."""
    from osprag.knowledge_base import KnowledgeBase

    path = KnowledgeBase._lexical_path(KnowledgeBase(settings, None))  # type: ignore[arg-type]
    if path is None:
        return None
    if not path.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "chunks" not in tables:
                return {}
            rows = db.execute("SELECT layer, COUNT(*) FROM chunks GROUP BY layer").fetchall()
    except sqlite3.Error:
        return {}
    return {str(layer): int(n) for layer, n in rows}


def _check_index(
    report: DoctorReport, layer: str, store: Any, col: Any, count: int, dim: int
) -> None:
    """Counts vs the vector index: missing or torn segment files, a purged log, a failing load."""
    name = f"index:{layer}"
    seg = store.vector_segment(col.id) if store.mode == "embedded" else None
    if seg is not None and seg["flushed_seq"] is not None:
        problem = hnsw_files_problem(seg["folder"])
        if problem is None and seg["log_min_seq"] is not None:
            if seg["log_min_seq"] > seg["flushed_seq"] + 1:
                problem = (
                    f"Chroma's log was purged past the flushed index ({seg['flushed_seq']} < "
                    f"{seg['log_min_seq']}): vectors are missing"
                )
        if problem is not None:
            report.add(
                name,
                "fail",
                problem,
                f"osp repair {layer} (vectors from the cache or the last backup), or "
                f"osp backup restore ARCHIVE --layer {layer} --yes (stop other writers first)",
            )
            return
    if count == 0:
        return
    try:
        got = col.get(limit=1, include=["embeddings"])
        probe = np.zeros(dim, dtype=np.float32)
        probe[0] = 1.0
        col.query([probe.tolist()], min(10, count), None, None, [])
        if len(got["ids"]) != 1:
            raise OspragError("count says records exist but get returned none")
    except OspragError as exc:
        report.add(
            name,
            "fail",
            f"loading the vector index failed: {exc.message}",
            f"osp repair {layer}, or osp backup restore ARCHIVE --layer {layer} --yes",
        )
        return
    report.add(name, "ok", "vector index loads and answers")


def _check_sqlite(report: DoctorReport, store: Any) -> None:
    path = store.sqlite_path()
    if path is None or not path.is_file():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.Error as exc:
        report.add("sqlite", "fail", f"{path.name}: {exc}", "restore from a verified backup")
        return
    if rows == ["ok"]:
        report.add("sqlite", "ok", f"{path.name} integrity_check ok")
    else:
        report.add(
            "sqlite",
            "fail",
            f"{path.name}: {'; '.join(rows[:3])}",
            "stop all writers and restore from a verified backup",
        )


def _check_disk(report: DoctorReport, settings: Settings) -> None:
    from osprag.ops.backup import backup_dir

    target = backup_dir(settings)
    probe = target if target.exists() else target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    data = _dir_bytes(settings.data_dir) if settings.effective_storage == "embedded" else 0
    detail = f"{free / 1e9:.1f} GB free at {probe}; data {data / 1e6:.1f} MB"
    # A restore needs room for the new collections and a pre-restore backup beside the old.
    if data and free < data:
        report.add("disk", "fail", detail, "free space: a restore needs about 2x the data size")
    elif data and free < 2 * data:
        report.add("disk", "warn", detail, "free space: a restore needs about 2x the data size")
    else:
        report.add("disk", "ok", detail)


def _proc_kb(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# A query/ingest process peaks at ~0.9 GB with torch and about half with ONNX
# (docs/benchmarks.md); below this much available memory the next one may be killed.
MEMORY_BUDGET_MB = 1024


def _check_memory(report: DoctorReport) -> None:
    """Peak RSS of this process (VmHWM) against the memory still available to the next one."""
    peak = _proc_kb("/proc/self/status", "VmHWM")
    available = _proc_kb("/proc/meminfo", "MemAvailable")
    if peak is None or available is None:
        return
    detail = f"this process peaked at {peak / 1024:.0f} MB; {available / 1024:.0f} MB available"
    if available / 1024 < MEMORY_BUDGET_MB:
        report.add(
            "memory",
            "warn",
            detail,
            f"a query or ingest process needs up to ~{MEMORY_BUDGET_MB} MB (torch); use the "
            "ONNX backend (osp model export) or free memory",
        )
    else:
        report.add("memory", "ok", detail)


def _check_backups(report: DoctorReport, settings: Settings) -> None:
    from osprag.ops.backup import backup_dir, newest_backup_age_hours

    age = newest_backup_age_hours(settings)
    limit = settings.backup_max_age_hours
    where = backup_dir(settings)
    if age is None:
        report.add(
            "backup", "warn", f"no backup in {where}", "schedule `osp backup create` (see docs)"
        )
    elif age > limit:
        report.add(
            "backup",
            "warn",
            f"newest backup is {age:.1f} h old (limit {limit:g} h)",
            "check the backup timer/cron job and its log",
        )
    else:
        report.add("backup", "ok", f"newest backup {age:.1f} h old in {where}")
