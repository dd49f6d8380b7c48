"""Document routes: list, open, download the original, delete, and upload (upsert one file)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from osprag.errors import IngestError, InvalidInput, TooLarge
from osprag.ingest.sync import SUPPORTED

from .state import Editor, Reader, ServerState, State

router = APIRouter(prefix="/api/v1/documents", tags=["documents"])

_SAFE_NAME = re.compile(r"^[\w .()\-äöüÄÖÜß]{1,200}$")
_READ_CHUNK = 1 << 20


@router.get("", summary="Documents the caller may see, one page at a time")
def list_documents(
    who: Reader,
    st: State,
    layer: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    docs, total = st.kb.documents(layer=layer, limit=limit, offset=offset, principal=who.principal)
    return {"documents": [d.to_dict() for d in docs], "total": total}


@router.get("/{doc_id}", summary="One document and its chunks in reading order")
def get_document(doc_id: str, who: Reader, st: State) -> JSONResponse:
    info, chunks = st.kb.document(doc_id, principal=who.principal)
    rows = [c.to_dict() for c in chunks]
    st.audit.record(who.principal.name, "document", rows or [info.to_dict()])
    return JSONResponse({"document": info.to_dict(), "chunks": rows})


@router.get("/{doc_id}/file", summary="The original file, when it is still on disk")
def get_file(doc_id: str, who: Reader, st: State) -> FileResponse:
    from osprag.documents import document_file

    info, path = document_file(st.kb, doc_id, principal=who.principal)
    st.audit.record(who.principal.name, "file", [info.to_dict()])
    return FileResponse(path, filename=path.name)


@router.delete("/{doc_id}", summary="Delete a document and all its chunks")
def delete_document(doc_id: str, who: Editor, st: State) -> dict[str, Any]:
    with st.write_lock:
        info = st.kb.delete_document(doc_id, principal=who.principal)
    return {"deleted": info.id, "layer": info.layer, "chunks": info.chunks}


def _safe_name(name: str | None) -> str:
    base = Path(name or "").name.strip()
    if not base or base.startswith(".") or not _SAFE_NAME.match(base):
        raise InvalidInput(
            f"file name {name!r} is not allowed",
            hint="use letters, digits, spaces, . - _ ( ) and a known extension",
        )
    if Path(base).suffix.lower() not in SUPPORTED:
        raise InvalidInput(
            f"{base}: unsupported file type", hint="supported: " + " ".join(sorted(SUPPORTED))
        )
    return base


@router.post("", summary="Upload one file: parsed, chunked and upserted into a layer")
async def upload(
    who: Editor,
    st: State,
    file: Annotated[UploadFile, File(description="the document")],
    layer: Annotated[str, Form()],
    access_level: Annotated[int | None, Form(ge=1, le=4)] = None,
    doc_type: Annotated[str | None, Form()] = None,
    tags: Annotated[str | None, Form(description="e.g. QM, REK")] = None,
    status: Annotated[str | None, Form()] = None,
    version: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    st.settings.layer(layer)
    name = _safe_name(file.filename)
    if access_level is not None and access_level > who.principal.clearance:
        raise InvalidInput(
            f"access_level {access_level} is above your clearance {who.principal.clearance}"
        )
    limit = int(st.settings.server.max_upload_mb * 1024 * 1024)
    folder = st.settings.data_dir / "uploads" / layer
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=Path(name).suffix)
    tmp = Path(tmp_name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(_READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(
                        f"{name} is larger than {st.settings.server.max_upload_mb:g} MB",
                        hint="raise OSP_SERVER__MAX_UPLOAD_MB or ingest the folder with osp ingest",
                    )
                out.write(chunk)
        overrides = {
            k: v
            for k, v in {
                "access_level": access_level,
                "doc_type": doc_type,
                "tags": tags,
                "status": status,
                "version": version,
            }.items()
            if v not in (None, "")
        }
        report = await run_in_threadpool(
            _ingest, st, tmp, folder / name, layer, overrides, who.principal.clearance
        )
    finally:
        tmp.unlink(missing_ok=True)
    report = _without_server_paths(report, folder, name)
    counts = report["counts"]
    for status_name, n in counts.items():
        if n:
            st.metrics.ingest_files.labels(status_name).inc(n)
    st.metrics.ingest_chunks.inc(report["chunks_written"])
    if counts["failed"]:
        reason = report["files"][0].get("reason") or "could not be ingested"
        raise IngestError(str(reason), path=name)
    return JSONResponse({"report": report})


def _without_server_paths(report: dict[str, Any], folder: Path, name: str) -> dict[str, Any]:
    """The caller named a file, not a place on the server: the report and its failure reasons
    speak of the upload's name only (no data directory layout in answers)."""
    prefix = str(folder / name)
    report["roots"] = [name]
    for f in report.get("files", []):
        if f.get("reason"):
            f["reason"] = str(f["reason"]).replace(prefix + ": ", "").replace(prefix, name)
    return report


def _ingest(
    st: ServerState,
    tmp: Path,
    target: Path,
    layer: str,
    overrides: dict[str, Any],
    clearance: int,
) -> dict[str, Any]:
    """Swap the upload in and ingest it; on failure the previous file comes back."""
    with st.write_lock:
        previous = target.with_name(f".{target.name}.prev")
        had = target.exists()
        if had:
            os.replace(target, previous)
        os.replace(tmp, target)
        ok = False
        try:
            report = st.kb.ingest(
                [target], layer, overrides=overrides, max_access_level=clearance
            )
            ok = report.counts()["failed"] == 0
            return report.to_dict()
        finally:
            if ok:
                previous.unlink(missing_ok=True)
            elif had:
                os.replace(previous, target)
            else:
                target.unlink(missing_ok=True)
