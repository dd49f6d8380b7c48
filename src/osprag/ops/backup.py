"""Backups users can trust: a consistent logical snapshot, verified before any restore.

Consistency. In embedded mode the backup runs as the data dir's writer (it holds
``osprag.lock``), so no write can interleave: every write acknowledged before the backup took
the lock is in the archive, none after it. Reads go on. In server mode there is no lock across
processes; the export reads chunks, then the document pointers, and checks every ingested
document's pointer against the chunks it captured for that revision. A document rewritten
meanwhile fails that check and the export is retried (``attempts``), so no document is ever
partial in an archive; when writers never pause, the backup fails instead of lying. Chroma
pages by offset, so a concurrent delete can make a page skip a record: for ingested chunks
that breaks a document's count (retry); plain ``add`` records have no such check, so a server
backup that must hold those needs writers paused (docs/operations.md).

Why not copy Chroma's files: with a process attached, chromadb 1.x keeps up to 1,000 writes per
HNSW segment only in its log and memory, SQLite is not in WAL mode, and a torn segment makes
1.5.x crash on load. A file copy is only trustworthy with every Chroma process stopped, and it
would not move between embedded and server stores. The logical export (ids, documents,
metadata, float32 embeddings bit-for-bit, document registry) is what restore relies on.

Seam for ``osp serve``: a server that owns the data dir calls :func:`create_backup` and
:func:`restore_backup` in-process from its admin API with its own ``KnowledgeBase`` (which
holds the lock), after pausing its write queue; nothing here opens a second client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from osprag import __version__
from osprag.config import Settings
from osprag.errors import BackupInvalid, InvalidInput, StoreError
from osprag.knowledge_base import KnowledgeBase
from osprag.ops import archive, swap
from osprag.ops.importer import ImportReport, check_identity, replace_layers
from osprag.ops.transfer import LayerFile, write_layer

_TAG = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_NAME = re.compile(r"^osp-(\d{8}T\d{6}Z)(?:-([A-Za-z0-9_-]{1,40}))?(?:\.(\d+))?\.tar\.gz(\.enc)?$")
Progress = Callable[[int], None]


def backup_dir(settings: Settings) -> Path:
    """Where archives go: the setting, else beside the data dir, else the user's data dir."""
    if settings.backup_dir is not None:
        return settings.backup_dir
    if settings.effective_storage == "embedded":
        return settings.data_dir.resolve().parent / "osp-backups"
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "osprag" / "backups"


def configured_key(settings: Settings, key_file: Path | None = None) -> bytes | None:
    path = key_file or settings.backup_key_file
    return archive.load_key(path) if path is not None else None


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@dataclass
class BackupInfo:
    path: str
    created: str
    tag: str | None
    size: int
    encrypted: bool
    counts: dict[str, int] = field(default_factory=dict)
    documents: dict[str, int] = field(default_factory=dict)
    sha256: str | None = None
    seconds: float | None = None
    attempts: int = 1

    @property
    def created_dt(self) -> datetime:
        return datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ create


def create_backup(
    kb: KnowledgeBase,
    *,
    tag: str | None = None,
    key: bytes | None = None,
    directory: Path | None = None,
    attempts: int = 3,
) -> BackupInfo:
    """Write a verified-on-read archive of every configured layer and return its summary.

    The caller owns the consistency precondition: in embedded mode ``kb`` must be the writer
    (``KnowledgeBase.open`` took the lock); see the module docstring for server mode.
    """
    if tag is not None and not _TAG.match(tag):
        raise InvalidInput(f"tag {tag!r} must be 1-40 characters of A-Z a-z 0-9 _ -")
    if kb.settings.effective_storage == "embedded" and kb._lock is None:
        raise InvalidInput(
            "an embedded backup must hold the data-dir lock to be consistent",
            hint="open the KnowledgeBase as a writer (read_only=False)",
        )
    started = time.perf_counter()
    target_dir = _private_dir(Path(directory or backup_dir(kb.settings)))
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    stem = f"osp-{stamp}{'-' + tag if tag else ''}"
    suffix = f".tar.gz{'.enc' if key else ''}"
    target = target_dir / f"{stem}{suffix}"
    n = 1
    while target.exists():  # two backups in one second
        n += 1
        target = target_dir / f"{stem}.{n}{suffix}"
    _sweep(target_dir)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target_dir))
    try:
        layers_dir = _private_dir(staging / "layers")
        for attempt in range(1, attempts + 1):
            reports = {}
            for layer in kb.settings.ordered_layers():
                with open(
                    os.open(
                        layers_dir / f"{layer}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
                    ),
                    "wb",
                ) as fh:
                    reports[layer] = write_layer(kb, layer, fh)
            torn = {k: r.incomplete_documents for k, r in reports.items() if r.incomplete_documents}
            if not torn:
                break
            time.sleep(0.2 * attempt)
        else:
            raise StoreError(
                f"documents kept changing during {attempts} backup attempts: {torn}",
                hint="pause the writers (ingest jobs) and run the backup again",
            )
        manifest: dict[str, Any] = {
            "format": archive.FORMAT,
            "version": archive.VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "created_ts": now,
            "tag": tag,
            "osprag_version": __version__,
            "chromadb_version": kb.store.client_version(),
            "chroma_server_version": kb.store.version(),
            "storage": kb.store.mode,
            "where": kb.store.where,
            "epoch": swap.current_epoch(kb.store),
            "layers": {},
        }
        for layer, report in reports.items():
            lf = LayerFile(layers_dir / f"{layer}.jsonl")
            manifest["layers"][layer] = {
                "file": f"layers/{layer}.jsonl",
                "collection": lf.header.collection,
                "count": report.chunks,
                "documents": report.documents,
                "identity": lf.header.raw.get("identity"),
                "index": lf.header.raw.get("index"),
            }
        digest = archive.write_archive(target, staging, manifest, key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info = BackupInfo(
        path=str(target),
        created=manifest["created"],
        tag=tag,
        size=target.stat().st_size,
        encrypted=key is not None,
        counts={k: v["count"] for k, v in manifest["layers"].items()},
        documents={k: v["documents"] for k, v in manifest["layers"].items()},
        sha256=digest,
        seconds=time.perf_counter() - started,
        attempts=attempt,
    )
    _write_sidecar(target, info)
    return info


def _sweep(folder: Path, older_than: float = 6 * 3600) -> None:
    """Remove work files of killed runs (staging dirs, partial archives) after a while."""
    cutoff = time.time() - older_than
    for path in folder.glob(".*"):
        if not path.name.startswith((".staging-", ".restore-", ".verify-", ".osp-")):
            continue
        try:
            if path.stat().st_mtime > cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        except OSError:
            pass


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_sidecar(target: Path, info: BackupInfo) -> None:
    """Summary beside the archive so ``list`` and ``prune`` need no key and no full read."""
    data = info.to_dict()
    data.pop("path")
    fd = os.open(_sidecar(target), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)


# ------------------------------------------------------------------ list / verify / prune


def list_backups(settings: Settings, directory: Path | None = None) -> list[BackupInfo]:
    """Archives in the backup dir, newest first (summary from each archive's sidecar)."""
    folder = Path(directory or backup_dir(settings))
    if not folder.is_dir():
        return []
    out = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m is None or not path.is_file():
            continue
        created = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")
        info = BackupInfo(
            path=str(path),
            created=created,
            tag=m.group(2),
            size=path.stat().st_size,
            encrypted=bool(m.group(4)),
        )
        try:
            side = json.loads(_sidecar(path).read_text(encoding="utf-8"))
            info.counts = dict(side.get("counts", {}))
            info.documents = dict(side.get("documents", {}))
            info.sha256 = side.get("sha256")
            info.seconds = side.get("seconds")
        except (OSError, ValueError):
            pass
        out.append(info)
    return sorted(out, key=lambda b: (b.created, b.path), reverse=True)


@dataclass
class VerifyReport:
    path: str
    ok: bool
    created: str | None
    tag: str | None
    counts: dict[str, int]
    osprag_version: str | None
    chromadb_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_backup(
    path: Path, *, key: bytes | None = None, scratch: Path | None = None
) -> VerifyReport:
    """Check everything restore would check (hashes, paths, manifest, every record, counts)
    without touching any store. Raises ``BackupInvalid`` on the first problem."""
    path = Path(path)
    side = _sidecar(path)
    if side.is_file():
        try:
            want = json.loads(side.read_text(encoding="utf-8")).get("sha256")
        except ValueError:
            want = None
        if want and archive.sha256_file(path) != want:
            raise BackupInvalid(
                f"archive {path.name} does not match the sha256 recorded when it was written",
                hint="the file changed on disk; use another backup",
            )
    work = Path(tempfile.mkdtemp(prefix=".verify-", dir=scratch or path.parent))
    try:
        extracted = archive.read_archive(path, work, key)
        _scan_layers(extracted, path.name, extracted.manifest["layers"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    man = extracted.manifest
    return VerifyReport(
        path=str(path),
        ok=True,
        created=man.get("created"),
        tag=man.get("tag"),
        counts={k: int(v.get("count", 0)) for k, v in man["layers"].items()},
        osprag_version=man.get("osprag_version"),
        chromadb_version=man.get("chromadb_version"),
    )


def _scan_layers(
    extracted: archive.Extracted, label: str, layers: dict[str, Any]
) -> list[LayerFile]:
    files = []
    for layer, entry in layers.items():
        member = f"layers/{layer}.jsonl"
        if not isinstance(entry, dict) or member not in extracted.manifest["files"]:
            raise BackupInvalid(f"archive {label}: layer {layer!r} has no file")
        lf = LayerFile(extracted.layer_file(layer), name=f"{label}:{member}").scan()
        if lf.header.layer != layer:
            raise BackupInvalid(f"archive {label}: {member} holds layer {lf.header.layer!r}")
        if lf.chunks != entry.get("count") or lf.documents != entry.get("documents"):
            raise BackupInvalid(
                f"archive {label}: {member} has {lf.chunks} chunks / {lf.documents} documents, "
                f"the manifest says {entry.get('count')} / {entry.get('documents')}"
            )
        files.append(lf)
    return files


@dataclass
class PruneReport:
    kept: list[str]
    deleted: list[str]
    freed_bytes: int
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune_backups(
    settings: Settings,
    *,
    keep_daily: int,
    keep_weekly: int,
    dry_run: bool = False,
    directory: Path | None = None,
) -> PruneReport:
    """Keep the newest archive of each of the last ``keep_daily`` days that have one and of
    the last ``keep_weekly`` ISO weeks; the newest archive overall is always kept."""
    if keep_daily < 0 or keep_weekly < 0:
        raise InvalidInput("--keep-daily and --keep-weekly must be >= 0")
    backups = list_backups(settings, directory)
    keep: set[str] = set()
    if backups:
        keep.add(backups[0].path)
    days: list[str] = []
    weeks: list[tuple[int, int]] = []
    for b in backups:  # newest first
        day = b.created[:10]
        week = b.created_dt.isocalendar()[:2]
        if day not in days and len(days) < keep_daily:
            days.append(day)
            keep.add(b.path)
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.append(week)
            keep.add(b.path)
    deleted, freed = [], 0
    for b in backups:
        if b.path in keep:
            continue
        deleted.append(b.path)
        freed += b.size
        if not dry_run:
            Path(b.path).unlink(missing_ok=True)
            _sidecar(Path(b.path)).unlink(missing_ok=True)
    return PruneReport(
        kept=[b.path for b in backups if b.path in keep],
        deleted=deleted,
        freed_bytes=freed,
        dry_run=dry_run,
    )


# ------------------------------------------------------------------ restore


@dataclass
class RestoreReport:
    archive: str
    layers: list[ImportReport]
    epoch: int
    pre_restore_backup: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive": self.archive,
            "layers": [r.to_dict() for r in self.layers],
            "epoch": self.epoch,
            "pre_restore_backup": self.pre_restore_backup,
            "seconds": self.seconds,
        }


def restore_backup(
    kb: KnowledgeBase,
    path: Path,
    *,
    key: bytes | None = None,
    layers: Sequence[str] | None = None,
    reembed: bool = False,
    pre_backup: bool = True,
    progress: Progress | None = None,
) -> RestoreReport:
    """Verify the archive completely, back up the current state, then replace the chosen
    layers (default: all in the archive) and the document registry in one atomic flip that
    starts a new epoch; the lexical index of those layers is rebuilt."""
    kb._require_writable()
    started = time.perf_counter()
    path = Path(path)
    scratch = _private_dir(backup_dir(kb.settings))
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=scratch))
    try:
        extracted = archive.read_archive(path, work, key)
        available = extracted.manifest["layers"]
        chosen = list(layers) if layers else list(available)
        unknown = [x for x in chosen if x not in kb.settings.layers]
        if unknown:
            raise BackupInvalid(
                f"archive has layer(s) {unknown} that are not configured",
                hint="configure them (OSP_LAYERS__<NAME>__...) or pass --layer for the others",
            )
        missing = [x for x in chosen if x not in available]
        if missing:
            raise BackupInvalid(f"archive {path.name} has no layer(s) {missing}")
        files = _scan_layers(extracted, path.name, {x: available[x] for x in chosen})

        for lf in files:
            check_identity(kb, lf, reembed)
        pre = create_backup(kb, tag="pre-restore", key=key).path if pre_backup else None
        epoch, reports = replace_layers(
            kb, files, reembed=reembed, progress=progress, failpoint_prefix="restore"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RestoreReport(
        archive=str(path),
        layers=reports,
        epoch=epoch,
        pre_restore_backup=pre,
        seconds=time.perf_counter() - started,
    )


def newest_backup_age_hours(settings: Settings) -> float | None:
    backups = list_backups(settings)
    if not backups:
        return None
    age = datetime.now(timezone.utc) - backups[0].created_dt
    return age.total_seconds() / 3600
