"""Search routes: one query, a batch, and who the caller is."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .auth import Caller
from .schemas import BatchQueryRequest, QueryRequest
from .state import Reader, ServerState, State

router = APIRouter(prefix="/api/v1", tags=["search"])


def _run(st: ServerState, who: Caller, texts: list[str], opts: dict[str, Any]) -> list[Any]:
    t0 = time.perf_counter()
    results = st.kb.query(texts, principal=who.principal, **opts)
    per_query = (time.perf_counter() - t0) / len(texts)
    mode = opts.get("mode") or st.settings.search_mode
    for _ in texts:
        st.metrics.query_seconds.labels(mode).observe(per_query)
    out = [r.to_dict() for r in results]
    for r in out:
        st.audit.record(who.principal.name, "query", r["hits"])
    return out


@router.post("/query", summary="Search the layers (core first) under the caller's clearance")
def query(body: QueryRequest, who: Reader, st: State) -> JSONResponse:
    opts = body.kwargs()
    text = opts.pop("query")
    return JSONResponse(_run(st, who, [text], opts)[0])


@router.post("/query/batch", summary="Several queries with one set of options")
def query_batch(body: BatchQueryRequest, who: Reader, st: State) -> JSONResponse:
    opts = body.kwargs()
    texts = opts.pop("queries")
    return JSONResponse({"results": _run(st, who, texts, opts)})


@router.get("/whoami", summary="The caller's name, role and clearance")
def whoami(who: Reader) -> dict[str, Any]:
    p = who.principal
    return {"name": p.name, "role": p.role, "clearance": p.clearance, "auth": who.how}
