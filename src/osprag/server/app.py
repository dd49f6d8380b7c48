"""The HTTP app: a factory (no module globals), one error mapping, routes over the Python API.

``create_app(settings, kb=None)`` builds everything an app needs on ``app.state.osp``; tests pass
their own ``KnowledgeBase``. ``app_from_env`` is the factory uvicorn imports in each worker
process when ``--workers`` > 1 (settings then come from the environment).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from osprag import __version__
from osprag.config import Settings, load_settings
from osprag.errors import ConfigError, OspragError, RateLimited, Unauthorized
from osprag.generate.llm import LLMClient
from osprag.knowledge_base import KnowledgeBase

from . import routes_admin, routes_answer, routes_documents, routes_query
from .audit import AuditLog
from .auth import Authenticator, RateLimiter, is_loopback
from .metrics import Metrics
from .state import ServerState

log = logging.getLogger("osprag.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_HTTP_CODES = {
    401: "unauthorized",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
}


def check_bind(settings: Settings, host: str, auth: Authenticator) -> None:
    """No token, no network: a non-loopback bind without any token configured is refused."""
    if not is_loopback(host) and not auth.tokens.configured:
        raise ConfigError(
            f"refusing to serve on {host} without a token",
            hint="create one with `osp token create NAME --role admin --clearance 4`, or set "
            "OSP_SERVER__TOKEN / OSP_SERVER__TOKEN_FILE; or bind 127.0.0.1",
        )


def create_app(
    settings: Settings | None = None,
    kb: KnowledgeBase | None = None,
    *,
    host: str | None = None,
) -> FastAPI:
    settings = settings or load_settings()
    auth = Authenticator(settings)
    check_bind(settings, host or settings.server.host, auth)
    owns = kb is None
    kb = kb or KnowledgeBase.open(settings)
    st = ServerState(
        settings=settings,
        kb=kb,
        auth=auth,
        limiter=RateLimiter(settings.server.rate_limit),
        metrics=Metrics(kb.cache_stats),
        audit=AuditLog(settings.server.audit_log or settings.data_dir / "audit.jsonl"),
        owns_kb=owns,
        llm=LLMClient.from_settings(settings.llm),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if st.llm is not None:
            st.llm.close()
        if st.owns_kb:
            st.kb.close()

    app = FastAPI(
        title="osprag",
        version=__version__,
        description="Two-layer retrieval over quality-management documents, with access levels.",
        lifespan=lifespan,
    )
    app.state.osp = st
    _install_errors(app, st)
    app.include_router(routes_query.router)
    app.include_router(routes_documents.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_answer.router)
    _install_page(app)
    # The model loads before the first request is accepted, so /health/ready means ready.
    kb.embedder.embed_queries(["warm up"])
    st.model_ready = True
    app.add_middleware(RequestCounter, metrics=st.metrics)
    return app


def app_from_env() -> FastAPI:
    return create_app()


# The page runs only its own files: no inline script or style, no third-party origin, no frames.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate (ETag): an upgrade never mixes old and new files
}


class _PageFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def _install_page(app: FastAPI) -> None:
    static = resources.files("osprag.server") / "static"
    app.mount("/static", _PageFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        page = str(static / "index.html")
        return FileResponse(page, media_type="text/html", headers=PAGE_HEADERS)


def _error(st: ServerState, exc: OspragError) -> JSONResponse:
    st.metrics.errors.labels(exc.code).inc()
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


def _install_errors(app: FastAPI, st: ServerState) -> None:
    @app.exception_handler(OspragError)
    async def osprag_error(request: Request, exc: OspragError) -> JSONResponse:
        return _error(st, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        st.metrics.errors.labels("invalid_input").inc()
        return JSONResponse(
            {"error": "invalid_input", "message": "; ".join(parts) or "invalid request"},
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        st.metrics.errors.labels(code).inc()
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        st.metrics.errors.labels("internal_error").inc()
        return JSONResponse(
            {"error": "internal_error", "message": "internal error; see the server log"},
            status_code=500,
        )


class RequestCounter:
    """Plain ASGI middleware counting requests by route template and status (cheaper than
    ``BaseHTTPMiddleware`` on every query's latency)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                # the time the app took up to its answer, for browsers' devtools and the bench
                took = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={took:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), path, str(status[0])).inc()
