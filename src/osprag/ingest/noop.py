"""The no-op re-sync without opening Chroma: a local manifest checked against the store's state.

An unchanged re-sync spends ~1 s importing chromadb and opening the store only to read the
document registry and find that nothing changed. Here a sync that ended cleanly leaves, per
(layer, synced root), a manifest in the data dir: the root's registry records (source → size,
mtime_ns, chunks) as read from the store, stamped with a fingerprint of the store's state. The
next sync of that root first compares the folder's file facts with the manifest; only if every
file matches (and none is new or gone) *and* the store's fingerprint is still the stamped one
does it report the same "unchanged" result the full sync would, without importing chromadb.
Anything else — no manifest, another fingerprint, a different file, a dirty root — returns
``None`` and the caller runs the full sync, which writes a fresh manifest when it is done.

The fingerprint is read from the store's own files, so it covers every write path, including
ones that do not know about this module (another helper's new command, a raw chromadb client):

* Chroma's write log (``embeddings_queue``): every record write to any collection — chunks,
  the document registry, the write log — appends a row with a rising ``seq_id``. Pruning drops
  only rows below a collection's flushed position, never its newest, so the maximum rises with
  every write while the set of collections stays the same; dropping a collection (which could
  lower it) changes the ``collections`` table, and collection ids are never reused.
* Chroma's ``collections`` and ``collection_metadata`` tables: layer aliases, the registry's
  epoch (a restore), the document-registry pointer, collections created or dropped.
* osprag's per-layer generations and epoch (``lexical.gen.sqlite``), raised by osprag's own
  writes: a second, independent witness.

Opening a Chroma client writes a row of its own (``acquire_write``), so the file's change
counter or mtime cannot serve; the tables above do not change on open or read. Embedded
storage only (a server's state is not a local file); the data-dir lock is held while checking,
as the full sync would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .sync import ROOT_MARKER, FileResult, IngestReport, Progress, discover

if TYPE_CHECKING:
    from osprag.config import Settings
    from osprag.knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)

FORMAT = 1
"""Raise when the no-op decision in ``sync.py`` changes: older manifests are then ignored."""
MANIFEST_DIR = "ingest-manifests"
MAX_RESTAMP = 32
"""Manifests of other roots re-stamped after a sync (a write anywhere changes the fingerprint)."""


def manifest_dir(data_dir: Path) -> Path:
    return data_dir / MANIFEST_DIR


def manifest_path(data_dir: Path, layer: str, root_key: str) -> Path:
    key = hashlib.sha256(f"{layer}\x00{root_key}".encode()).hexdigest()[:32]
    return manifest_dir(data_dir) / f"{key}.json"


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)


def store_fingerprint(data_dir: Path) -> str | None:
    """A digest that changes with every write to the embedded store; None if unreadable."""
    from osprag.store import embedded_write_state  # Chroma's files are store.py's to read

    chroma = embedded_write_state(data_dir)
    if chroma is None:
        return None
    parts: list[Any] = [chroma]
    try:
        gens = data_dir / "lexical.gen.sqlite"
        if gens.is_file():
            db = _ro(gens)
            try:
                db.execute("BEGIN")
                parts.append(db.execute("SELECT layer, seq FROM generations ORDER BY 1").fetchall())
                parts.append(db.execute("SELECT value FROM state WHERE key = 'epoch'").fetchall())
                db.execute("COMMIT")
            finally:
                db.close()
        else:
            parts.append(None)
    except sqlite3.Error as exc:
        log.debug("store fingerprint unreadable: %s", exc)
        return None
    blob = json.dumps(parts, default=repr, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------------------- writing


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _snapshot(kb: KnowledgeBase, layer: str, root_key: str) -> dict[str, Any]:
    res = kb.store.documents().get(
        where={"$and": [{"layer": layer}, {"root": root_key}]}, include=["metadatas"]
    )
    records: dict[str, list[Any]] = {}
    marker = None
    for meta in res["metadatas"]:
        meta = meta or {}
        source = str(meta.get("source"))
        if source == ROOT_MARKER:
            marker = meta.get("state")
            continue
        records[source] = [meta.get("size"), meta.get("mtime_ns"), int(meta.get("chunks", 0))]
    return {"marker": marker, "records": records}


def stamp(kb: KnowledgeBase, layer: str, root_keys: Sequence[str]) -> int:
    """After a sync: (re)write the manifests of the roots just synced and of up to
    ``MAX_RESTAMP`` other roots, each from a fresh read of the registry, stamped with the
    store's fingerprint taken before and verified after those reads. Returns how many.

    Never raises: without a manifest the next sync simply takes the full path.
    """
    s = kb.settings
    if s.effective_storage != "embedded" or kb.read_only:
        return 0
    data_dir = s.data_dir
    try:
        targets: dict[tuple[str, str], None] = {(layer, r): None for r in root_keys}
        folder = manifest_dir(data_dir)
        if folder.is_dir():
            others = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            for path in others[:MAX_RESTAMP]:
                try:
                    old = json.loads(path.read_text(encoding="utf-8"))
                    key = (str(old["layer"]), str(old["root"]))
                except (OSError, ValueError, KeyError, TypeError):
                    path.unlink(missing_ok=True)
                    continue
                if key[0] in s.layers:
                    targets.setdefault(key, None)
        before = store_fingerprint(data_dir)
        if before is None:
            return 0
        snaps = {key: _snapshot(kb, *key) for key in targets}
        if store_fingerprint(data_dir) != before:
            return 0  # something wrote meanwhile: no claim about this state
        written = 0
        for (lay, root_key), snap in snaps.items():
            path = manifest_path(data_dir, lay, root_key)
            if snap["marker"] == "dirty":
                path.unlink(missing_ok=True)
                continue
            data = {"format": FORMAT, "layer": lay, "root": root_key, "store": before, **snap}
            _write_atomic(path, data)
            written += 1
        return written
    except Exception as exc:  # noqa: BLE001 - an optimisation must never fail the sync
        log.warning("ingest manifest not written (%s); the next re-sync takes the full path", exc)
        return 0


# ---------------------------------------------------------------------------- reading


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if not isinstance(data.get("records"), dict) or data.get("marker") == "dirty":
        return None
    return data


def _root_results(
    root: Path, records: Mapping[str, Any], *, recursive: bool, glob: str | None
) -> list[FileResult] | None:
    """The full sync's results for an unchanged root, or None when anything would change."""
    results: list[FileResult] = []
    seen: set[str] = set()
    for path, source, problem in discover(root, recursive=recursive, glob=glob):
        rec = records.get(source)
        if path is None or problem is not None or not isinstance(rec, list) or len(rec) != 3:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        if rec[0] != st.st_size or rec[1] != st.st_mtime_ns:
            return None
        seen.add(source)
        results.append(FileResult(source, "unchanged", chunks=int(rec[2])))
    if glob is None and set(records) - seen:
        return None  # a file is gone: the full sync deletes it
    return results


def try_noop(
    settings: Settings,
    paths: Sequence[str | Path],
    layer: str,
    *,
    recursive: bool = True,
    glob: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> IngestReport | None:
    """The report of a sync that would change nothing, or None: then run the full sync.

    Raises what the full sync would raise before touching files (unknown layer, data dir
    locked by another writer); everything else it cannot vouch for returns None.
    """
    started = time.perf_counter()
    settings.layer(layer)
    if settings.effective_storage != "embedded" or not paths:
        return None
    data_dir = settings.data_dir
    roots: list[tuple[Path, dict[str, Any]]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            return None
        root = path.resolve()
        manifest = _load(manifest_path(data_dir, layer, str(root)))
        if manifest is None or manifest.get("root") != str(root) or manifest.get("layer") != layer:
            return None
        roots.append((root, manifest))
    lock = None
    if not dry_run:
        from osprag.locking import DataDirLock

        try:  # what opening the store for writing checks first
            probe = data_dir / ".osp-write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            return None
        lock = DataDirLock(data_dir)
        lock.acquire(settings.lock_timeout)  # StoreLocked: the full path would wait the same
    try:
        fingerprint = store_fingerprint(data_dir)
        if fingerprint is None:
            return None
        report = IngestReport(layer=layer, roots=[str(Path(p)) for p in paths], dry_run=dry_run)
        per_root: list[list[FileResult]] = []
        for root, manifest in roots:
            if manifest.get("store") != fingerprint:
                return None
            results = _root_results(root, manifest["records"], recursive=recursive, glob=glob)
            if results is None:
                return None
            per_root.append(results)
        if store_fingerprint(data_dir) != fingerprint:
            return None
    finally:
        if lock is not None:
            lock.release()
    progress = progress or Progress()
    for results in per_root:
        if progress.on_files:
            progress.on_files(len(results))
        for result in results:
            report.files.append(result)
            if progress.on_file_done:
                progress.on_file_done(result)
    report.seconds = time.perf_counter() - started
    return report
