"""Layers, stats, health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from osprag.errors import OspragError

from .state import Admin, AnyCaller, Reader, ServerState, State

router = APIRouter(tags=["operations"])


@router.get("/api/v1/layers", summary="Layers with the chunks the caller may see")
def layers(who: Reader, st: State) -> dict[str, Any]:
    out = []
    for name in st.settings.ordered_layers():
        cfg = st.settings.layers[name]
        out.append(
            {
                "name": name,
                "description": cfg.description,
                "weight": cfg.weight,
                "count": st.kb.count(name, principal=who.principal),
            }
        )
    return {"layers": out}


@router.get("/api/v1/stats", summary="Per-layer store statistics and the query cache (admin)")
def stats(who: Admin, st: State) -> dict[str, Any]:
    return {
        "layers": [s.to_dict() for s in st.kb.stats()],
        "cache": st.kb.cache_stats(),
    }


@router.get("/health/live", summary="The process answers")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="Store reachable, model loaded, lexical index in sync")
def ready(st: State) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        st.kb.store.heartbeat()
        checks["store"] = "ok"
    except OspragError as exc:
        checks["store"] = f"unavailable: {exc.message}"
    checks["model"] = "ok" if st.model_ready else "loading"
    if checks["store"] == "ok":
        checks["lexical"] = _lexical_check(st)
    ok = all(v == "ok" or v.startswith("ok") for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


def _lexical_check(st: ServerState) -> str:
    if st.write_lock.locked():
        return "ok (a write is in progress)"
    try:
        for name in st.settings.ordered_layers():
            col = st.kb.collection_for(name)
            have = st.kb.lexical.count(name)
            want = col.count() if col is not None else 0
            if have != want:
                return f"out of sync: layer {name} has {have} lexical rows, {want} chunks"
    except OspragError as exc:
        return f"unavailable: {exc.message}"
    return "ok"


@router.get("/metrics", summary="Prometheus metrics (any valid token)")
def metrics(who: AnyCaller, st: State) -> Response:
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")
