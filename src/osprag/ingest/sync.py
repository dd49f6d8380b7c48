"""Folder sync into a layer: exact and idempotent, keyed by (layer, synced root, source path).

A changed document is replaced so that readers never see it mixed or missing: its new chunks
are written under new ids (the revision is part of the id), then the document's pointer in
the document registry is flipped, then the old chunks are collected. Readers hide chunks whose
revision is not the pointer's. Killed at any point, a re-run converges to what a clean ingest
produces: chunk ids are deterministic, and stray chunks of a root are collected at the end.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osprag.errors import AccessDenied, IngestError, InvalidInput, InvalidMetadata, OspragError
from osprag.metadata import validate_metadata

from .commit import GroupWriter
from .meta import (
    detect_language,
    folder_defaults,
    looks_like_header_line,
    map_keys,
    merge_metadata,
    parse_filename,
    parse_header_line,
)
from .model import Chunk, LoadedDocument

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase

# Registry record of a synced root, "dirty" while a sync writes. No supported file can have
# this source (it has no supported suffix), so it never collides with a document.
ROOT_MARKER = "<root>"
SUPPORTED = {".pdf", ".docx", ".md", ".markdown", ".html", ".htm", ".txt", ".csv", ".xlsx", ".pptx"}
Status = Literal["added", "updated", "unchanged", "deleted", "failed", "skipped"]


@dataclass
class FileResult:
    source: str
    status: Status
    chunks: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    """A parsed and chunked file waiting to be written."""

    source: str
    root_key: str
    sha: str
    stat: os.stat_result
    meta: dict[str, Any]
    chunks: list[Chunk]
    doc: LoadedDocument
    status: Status


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, OspragError) else str(exc)


@dataclass
class IngestReport:
    layer: str
    roots: list[str]
    dry_run: bool
    files: list[FileResult] = field(default_factory=list)
    chunks_written: int = 0
    texts_embedded: int = 0
    tokens_embedded: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("added", "updated", "unchanged", "deleted", "failed", "skipped")}
        for f in self.files:
            out[f.status] += 1
        return out

    @property
    def exit_code(self) -> int:
        """0 all ok, 1 some files failed (the others are in), 2 nothing could be done."""
        counts = self.counts()
        if counts["failed"] == 0:
            return 0
        done = sum(v for k, v in counts.items() if k not in ("failed", "skipped"))
        return 1 if done else 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "roots": self.roots,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "chunks_written": self.chunks_written,
            "texts_embedded": self.texts_embedded,
            "tokens_embedded": self.tokens_embedded,
            "seconds": round(self.seconds, 3),
            "files": [asdict(f) for f in self.files],
        }


@dataclass
class Progress:
    """Callbacks for a progress display; all optional."""

    on_files: Callable[[int], None] | None = None
    on_file_done: Callable[[FileResult], None] | None = None
    on_chunks: Callable[[int], None] | None = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def doc_key(layer: str, root_key: str, source: str) -> str:
    return "d-" + hashlib.sha256("\x00".join([layer, root_key, source]).encode()).hexdigest()[:32]


def discover(
    root: Path, *, recursive: bool, glob: str | None
) -> Iterator[tuple[Path | None, str, str | None]]:
    """(path, source, problem) for each candidate file under root; symlink loops reported.

    Folders starting with ``.`` or ``_`` (e.g. ``_sources``) and hidden files are skipped;
    directory symlinks are not followed, so a symlink loop cannot recurse.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        if not recursive:
            dirnames[:] = []
        for name in sorted(filenames):
            path = Path(dirpath) / name
            source = path.relative_to(root).as_posix()
            if name.startswith(".") or path.suffix.lower() not in SUPPORTED:
                continue
            if glob is not None and not (
                fnmatch.fnmatch(name, glob) or fnmatch.fnmatch(source, glob)
            ):
                continue
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    yield None, source, "broken symlink or symlink loop"
                    continue
                if not target.is_file():
                    continue
            yield path, source, None


class Syncer:
    """One sync run of a layer; created by ``KnowledgeBase.ingest``."""

    def __init__(
        self,
        kb: KnowledgeBase,
        layer: str,
        *,
        overrides: Mapping[str, Any] | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
        max_access_level: int | None = None,
    ) -> None:
        self.kb = kb
        # An uploader's clearance: nothing is written above it, nor replaced when it is above
        # (and an identical file's "unchanged" would confirm a secret document's content).
        self.max_access_level = max_access_level
        self.layer = layer
        self.cfg = kb.settings.layer(layer)
        self.overrides = map_keys(dict(overrides or {}))
        self.dry_run = dry_run
        self.progress = progress or Progress()
        self._marker: tuple[str, str] | None = None
        self._wrote = False
        self.embedded = 0  # texts the model embedded (cache misses)
        self.tokens = 0  # their tokens, as the chunker counts them
        self.written = 0  # chunks written
        self._parser: Any = None
        self._chunker: Any = None
        self._writer: GroupWriter | None = None
        if not dry_run:
            kb._require_writable()

    # ------------------------------------------------------------------ lazy heavy parts

    def parser(self) -> Any:
        if self._parser is None:
            from .worker import Parser

            s = self.kb.settings
            self._parser = Parser(
                max_bytes=int(s.max_file_mb * 1024 * 1024),
                max_seconds=s.parse_timeout,
                max_memory_mb=s.parse_memory_mb,
            )
        return self._parser

    def chunker(self) -> Any:
        if self._chunker is None:
            self._chunker = make_chunker(self.kb)
        return self._chunker

    def writer(self) -> GroupWriter:
        if self._writer is None:
            self._writer = GroupWriter(
                self.kb,
                self.layer,
                doc_key,
                before_write=self._before_write,
                progress=self.progress.on_chunks,
            )
        return self._writer

    def close(self) -> None:
        if self._parser is not None:
            self._parser.close()
            self._parser = None

    # ------------------------------------------------------------------ sync

    def sync_root(
        self, root: Path, report: IngestReport, *, recursive: bool, glob: str | None
    ) -> None:
        root = root.resolve()
        root_key = str(root)
        registry = self._registry(root_key)
        self._marker = (doc_key(self.layer, root_key, ROOT_MARKER), root_key)
        was_dirty = registry.pop(ROOT_MARKER, {}).get("state") == "dirty"
        self._wrote = False
        seen: set[str] = set()
        candidates = list(discover(root, recursive=recursive, glob=glob))
        if self.progress.on_files:
            self.progress.on_files(len(candidates))
        pending: list[_Pending] = []

        def flush() -> None:
            for result in self.finish(pending):
                self._record(report, result)
            pending.clear()

        for path, source, problem in candidates:
            seen.add(source)
            if path is None:
                self._record(report, FileResult(source, "failed", reason=problem))
                continue
            prepared = self.prepare(path, source, root, root_key, registry.get(source))
            if isinstance(prepared, FileResult):
                self._record(report, prepared)
                continue
            pending.append(prepared)
            if sum(len(p.chunks) for p in pending) >= self.kb.settings.ingest_batch_chunks:
                flush()
        flush()
        if glob is None:
            for source, rec in sorted(registry.items()):
                if source not in seen:
                    self._record(report, self._delete_document(str(rec["id"]), source))
        if not self.dry_run and (was_dirty or self._wrote):
            # Strays exist only after an interrupted run: a clean no-op sync skips the scan.
            self._collect_strays(root_key)
            self._set_marker("clean")

    def _set_marker(self, state: str) -> None:
        assert self._marker is not None
        marker_id, root_key = self._marker
        self.kb.store.documents().write(
            "upsert",
            [marker_id],
            [[1.0]],
            [ROOT_MARKER],
            [{"layer": self.layer, "root": root_key, "source": ROOT_MARKER, "state": state}],
        )

    def _before_write(self) -> None:
        """Mark the root dirty before its first write, so a crash is cleaned up next time."""
        if not self._wrote:
            self._wrote = True
            if self._marker is not None:
                self._set_marker("dirty")

    def sync_single(self, path: Path, report: IngestReport) -> None:
        """A file named on the command line: upserted, never causes deletions."""
        self._marker = None
        root = path.resolve().parent
        root_key = str(root)
        registry = self._registry(root_key)
        if self.progress.on_files:
            self.progress.on_files(1)
        self._record(
            report, self.sync_file(path, path.name, root, root_key, registry.get(path.name))
        )

    def _record(self, report: IngestReport, result: FileResult) -> None:
        report.files.append(result)
        if self.progress.on_file_done:
            self.progress.on_file_done(result)

    def _registry(self, root_key: str) -> dict[str, dict[str, Any]]:
        res = self.kb.store.documents().get(
            where={"$and": [{"layer": self.layer}, {"root": root_key}]}, include=["metadatas"]
        )
        out = {}
        for rid, meta in zip(res["ids"], res["metadatas"], strict=True):
            meta = dict(meta or {})
            meta["id"] = rid
            out[str(meta["source"])] = meta
        return out

    def sync_file(
        self, path: Path, source: str, root: Path, root_key: str, rec: dict[str, Any] | None
    ) -> FileResult:
        """One file, start to finish (a folder sync batches several through ``prepare``)."""
        prepared = self.prepare(path, source, root, root_key, rec)
        if isinstance(prepared, FileResult):
            return prepared
        return self.finish([prepared])[0]

    def prepare(
        self, path: Path, source: str, root: Path, root_key: str, rec: dict[str, Any] | None
    ) -> FileResult | _Pending:
        """Everything before writing: decide, hash, parse, extract metadata, chunk."""
        try:
            self._check_level(rec.get("access_level", 4) if rec else None, "the stored document")
            stat = path.stat()
            if rec and rec.get("size") == stat.st_size and rec.get("mtime_ns") == stat.st_mtime_ns:
                return FileResult(source, "unchanged", chunks=int(rec.get("chunks", 0)))
            limit = int(self.kb.settings.max_file_mb * 1024 * 1024)
            if stat.st_size > limit:
                raise IngestError(
                    f"file too large ({stat.st_size / 1e6:.1f} MB > limit "
                    f"{self.kb.settings.max_file_mb:g} MB)",
                    path=source,
                    hint="raise OSP_MAX_FILE_MB if the file is legitimate",
                )
            if not os.access(path, os.R_OK):
                raise IngestError("file is not readable (permissions)", path=source)
            sha = _sha256(path)
            if rec and rec.get("sha256") == sha:
                if not self.dry_run:
                    self._touch(str(rec["id"]), rec, stat)
                return FileResult(source, "unchanged", chunks=int(rec.get("chunks", 0)))
            status: Status = "updated" if rec else "added"
            doc = self.parser().parse(path)
            meta = self._metadata(path, source, root, doc, sha, stat)
            self._check_level(meta["access_level"], "the file's metadata")
            chunks: list[Chunk] = self.chunker().chunk(doc.blocks)
            if not chunks:
                raise IngestError(
                    "no text found", path=source, hint="; ".join(doc.warnings) or None
                )
            if self.dry_run:
                return FileResult(source, status, chunks=len(chunks), warnings=doc.warnings)
            return _Pending(source, root_key, sha, stat, meta, chunks, doc, status)
        except (IngestError, InvalidMetadata, InvalidInput, AccessDenied) as exc:
            return FileResult(source, "failed", reason=_reason(exc))
        except OSError as exc:
            return FileResult(source, "failed", reason=exc.strerror or str(exc))

    def _check_level(self, level: Any, what: str) -> None:
        if level is None or self.max_access_level is None:
            return
        if int(level) > self.max_access_level:
            raise AccessDenied(
                f"access level {int(level)} of {what} is above your clearance "
                f"{self.max_access_level}",
                hint="ask someone with that clearance to upload it",
            )

    def finish(self, group: list[_Pending]) -> list[FileResult]:
        """Write a group of prepared files (``commit.GroupWriter``), one result per file."""
        written, failed = self.writer().write(group)
        self.report_embedding(written.embedded, written.tokens, written.chunks)
        return [
            FileResult(p.source, "failed", reason=failed[p.source])
            if p.source in failed
            else FileResult(p.source, p.status, chunks=len(p.chunks), warnings=p.doc.warnings)
            for p in group
        ]

    def _metadata(
        self,
        path: Path,
        source: str,
        root: Path,
        doc: LoadedDocument,
        sha: str,
        stat: os.stat_result,
    ) -> dict[str, Any]:
        raw = dict(doc.metadata)
        header = raw.pop("header_line", None)
        from_header = (
            parse_header_line(str(header)) if header and looks_like_header_line(str(header)) else {}
        )
        merged = merge_metadata(
            folder_defaults(path, root),
            parse_filename(path),
            map_keys(raw),
            from_header,
            self.overrides,
        )
        text = "\n".join(b.text for b in doc.blocks[:200])
        merged.setdefault("language", detect_language(text))
        merged.setdefault("title", doc.title or path.stem)
        merged.update(
            source=source,
            sha256=sha,
            size=stat.st_size,
            mtime=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stat.st_mtime)),
            format=path.suffix.lower().lstrip("."),
        )
        clean = validate_metadata(
            {k: v for k, v in merged.items() if v is not None},
            # an uploader's file that names no level gets the uploader's clearance, not the
            # layer's (secret) default they could neither write nor read back
            default_access_level=min(self.cfg.default_access_level, self.max_access_level or 4),
            where=source,
        )
        return clean

    def report_embedding(self, embedded: int, tokens: int, written: int) -> None:
        self.embedded += embedded
        self.tokens += tokens
        self.written += written

    def _touch(self, doc_id: str, rec: dict[str, Any], stat: os.stat_result) -> None:
        meta = {k: v for k, v in rec.items() if k != "id"}
        meta.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        self.kb.store.documents().write("upsert", [doc_id], [[1.0]], [meta["source"]], [meta])

    def _delete_document(self, doc_id: str, source: str) -> FileResult:
        if self.dry_run:
            return FileResult(source, "deleted")
        self._before_write()
        self.kb.store.documents().delete([doc_id])  # pointer first: readers stop seeing it
        self.kb.record_write(self.layer, "flip")
        self.writer().collect({doc_id: None})
        return FileResult(source, "deleted")

    def _collect_strays(self, root_key: str) -> None:
        """Chunks of this root whose document revision is not current: crash leftovers."""
        col = self.kb.collection_for(self.layer)
        if col is None:
            return
        current = {
            str(m["id"]): str(m["rev"])
            for source, m in self._registry(root_key).items()
            if source != ROOT_MARKER
        }
        res = col.get(where={"osp_root": root_key}, include=["metadatas"])
        stray = [
            rid
            for rid, m in zip(res["ids"], res["metadatas"], strict=True)
            if current.get(str((m or {}).get("osp_doc"))) != (m or {}).get("osp_rev")
        ]
        if stray:
            self.kb.delete_ids(self.layer, stray)


def make_chunker(kb: KnowledgeBase) -> Any:
    """A chunker sized in the configured model's own tokens (its tokenizer, window, prefix)."""
    from osprag.embedding import bundled_minilm_path, resolve_model_path
    from osprag.errors import ModelNotFound

    from .chunking import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP_TOKENS, Chunker

    settings = kb.settings
    identity = kb.embedder.identity
    try:
        folder = resolve_model_path(settings.embedding_model)
    except ModelNotFound:  # a remote model: count with MiniLM's tokenizer as an estimate
        folder = bundled_minilm_path() or Path(".")
    return Chunker(
        folder,
        settings.chunk_tokens or DEFAULT_MAX_TOKENS,
        DEFAULT_OVERLAP_TOKENS if settings.chunk_overlap is None else settings.chunk_overlap,
        max_seq_length=identity.max_seq_length or None,
        passage_prefix=identity.passage_prefix,
    )


def ingest(
    kb: KnowledgeBase,
    paths: Sequence[str | Path],
    layer: str,
    *,
    recursive: bool = True,
    glob: str | None = None,
    dry_run: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    max_access_level: int | None = None,
) -> IngestReport:
    """Sync folders (exactly: add, replace, skip unchanged, delete gone) or single files."""
    kb.settings.layer(layer)
    if not paths:
        raise InvalidInput("ingest needs at least one path")
    started = time.perf_counter()
    report = IngestReport(layer=layer, roots=[str(Path(p)) for p in paths], dry_run=dry_run)
    syncer = Syncer(
        kb,
        layer,
        overrides=overrides,
        dry_run=dry_run,
        progress=progress,
        max_access_level=max_access_level,
    )
    synced: list[str] = []
    try:
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                syncer.sync_root(path, report, recursive=recursive, glob=glob)
                synced.append(str(path.resolve()))
            elif path.is_file():
                syncer.sync_single(path, report)
            else:
                report.files.append(FileResult(str(raw), "failed", reason="no such file or folder"))
    finally:
        syncer.close()
    if not dry_run:
        from .noop import stamp

        stamp(kb, layer, synced)  # lets the next unchanged re-sync skip opening the store
    report.chunks_written = syncer.written
    report.texts_embedded = syncer.embedded
    report.tokens_embedded = syncer.tokens
    report.seconds = time.perf_counter() - started
    return report
