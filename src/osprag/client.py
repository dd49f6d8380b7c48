"""A client for a running ``osp serve``: the same ``query`` as ``KnowledgeBase``, over HTTP.

The server decides who is asking from the bearer token, so clearance holds on machines that
never see the data dir (LlamaIndex or LangChain apps, notebooks). Errors come back as the same
``OspragError`` subclasses the server raised — the JSON ``error`` code names the class — so
callers handle a local and a remote knowledge base alike.

Configuration: ``url`` / ``token`` arguments, else ``OSP_REMOTE_URL`` / ``OSP_REMOTE_TOKEN``
(or ``OSP_REMOTE_TOKEN_FILE``, a file holding the token, e.g. a Docker secret). These are the
client's variables, not the server's settings, so they are not part of ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from . import errors
from .errors import AccessDenied, ConfigError, OspragError, StoreUnavailable
from .results import QueryResult

DEFAULT_TIMEOUT = 30.0
QUERY_PATH = "/api/v1/query"
BATCH_PATH = "/api/v1/query/batch"
WHOAMI_PATH = "/api/v1/whoami"

# Status → class for error bodies whose code this version does not know (a newer server) and
# for bodies that are not osprag's (a reverse proxy's error page).
_BY_STATUS: dict[int, type[OspragError]] = {
    400: errors.InvalidInput,
    401: errors.Unauthorized,
    403: AccessDenied,
    404: errors.NotFound,
    413: errors.InvalidInput,
    422: errors.InvalidInput,
    429: errors.RateLimited,
    502: StoreUnavailable,
    503: StoreUnavailable,
    504: StoreUnavailable,
}


def _error_classes() -> dict[str, type[OspragError]]:
    """Looked up per call so that error classes added to ``errors.py`` are picked up."""
    return {cls.code: cls for cls in errors.ALL_ERRORS}


def error_from_response(response: httpx.Response, *, token_given: bool) -> OspragError:
    """The ``OspragError`` a non-2xx response stands for."""
    status = response.status_code
    code: str | None = None
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        code = body.get("error") if isinstance(body.get("error"), str) else None
        message = str(body.get("message") or "")
    if not message:
        message = f"osp serve answered HTTP {status}: {response.text[:200].strip()}"
    cls = _error_classes().get(code or "") or _BY_STATUS.get(status, OspragError)
    hint: str | None = None
    if status == 401:
        hint = (
            "set OSP_REMOTE_TOKEN (or pass token=) to a token from `osp token create`"
            if not token_given
            else "the token is unknown or revoked; ask for a new one (`osp token create`)"
        )
    elif status == 429:
        retry = response.headers.get("Retry-After")
        hint = f"retry after {retry} s" if retry else "retry later"
        if issubclass(cls, errors.RateLimited):
            try:
                return cls(message, retry_after=float(retry or 1), hint=hint)
            except ValueError:  # an HTTP-date Retry-After
                pass
    return cls(message, hint=hint)


def _read_token(token: str | None) -> str | None:
    if token is not None:
        return token or None
    if value := os.environ.get("OSP_REMOTE_TOKEN"):
        return value.strip()
    if path := os.environ.get("OSP_REMOTE_TOKEN_FILE"):
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(
                f"OSP_REMOTE_TOKEN_FILE {path!r} cannot be read: {exc.strerror}",
                hint="point it at a file holding one token",
            ) from None
    return None


class RemoteKnowledgeBase:
    """Search a knowledge base served by ``osp serve``, as the holder of one token.

    There is no ``principal`` argument: the server maps the token to a principal, so a client
    cannot raise its own clearance.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = url or os.environ.get("OSP_REMOTE_URL")
        if not base:
            raise ConfigError(
                "no osp serve URL given",
                hint="pass url= or set OSP_REMOTE_URL, e.g. http://127.0.0.1:8765",
            )
        if not base.startswith(("http://", "https://")):
            raise ConfigError(
                f"osp serve URL must start with http:// or https://, got {base!r}",
                hint="e.g. OSP_REMOTE_URL=http://127.0.0.1:8765",
            )
        self.url = base.rstrip("/")
        self._token = _read_token(token)
        self._timeout = timeout
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._headers = headers
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._async_transport = async_transport

    def __repr__(self) -> str:  # never show the token
        return f"RemoteKnowledgeBase({self.url!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteKnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- requests

    def _unreachable(self, exc: httpx.HTTPError) -> StoreUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            return StoreUnavailable(
                f"osp serve at {self.url} did not answer within {self._timeout:g} s",
                hint="the server is overloaded or stuck; retry, or raise timeout=",
            )
        return StoreUnavailable(
            f"osp serve at {self.url} is not reachable ({type(exc).__name__}: {exc})",
            hint="start it with `osp serve`, or check OSP_REMOTE_URL",
        )

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_from_response(response, token_given=self._token is not None)
        try:
            return response.json()
        except ValueError:
            raise OspragError(
                f"osp serve at {self.url} answered {response.request.url.path} with non-JSON",
                hint="is OSP_REMOTE_URL pointing at osp serve (and not at a proxy page)?",
            ) from None

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._decode(response)

    def _get(self, path: str) -> Any:
        try:
            response = self._client.get(path)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._decode(response)

    async def _apost(self, path: str, body: Mapping[str, Any]) -> Any:
        async with httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=self._timeout,
            transport=self._async_transport,
        ) as client:
            try:
                response = await client.post(path, json=body)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
        return self._decode(response)

    def _unreadable(self, why: str) -> OspragError:
        return OspragError(
            f"osp serve at {self.url} returned a result this client cannot read ({why})",
            hint="client and server versions differ; upgrade osprag on the older side",
        )

    def _result(self, data: Any) -> QueryResult:
        try:
            return QueryResult.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unreadable(repr(exc)) from None

    # ----------------------------------------------------------------- API

    def whoami(self) -> dict[str, Any]:
        """The principal the server maps this token to: ``{"name", "role", "clearance", ...}``."""
        data = self._get(WHOAMI_PATH)
        if not isinstance(data, dict):
            raise self._unreadable(f"whoami answered {str(data)[:100]!r}")
        return data

    def query(self, text: str, **options: Any) -> QueryResult:
        """POST /api/v1/query. ``options`` are ``KnowledgeBase.query``'s keyword arguments
        (layers, n_results, where, where_document, include, min_score, mode, alpha,
        include_history, route_tags, expand, layer_min, explain)."""
        return self._result(self._post(QUERY_PATH, query_body(text, options)))

    async def aquery(self, text: str, **options: Any) -> QueryResult:
        """``query`` without blocking the event loop."""
        return self._result(await self._apost(QUERY_PATH, query_body(text, options)))

    def query_batch(self, texts: Sequence[str], **options: Any) -> list[QueryResult]:
        """POST /api/v1/query/batch: several queries with the same options, one round trip."""
        if isinstance(texts, str):
            raise errors.InvalidInput("query_batch takes a list of queries; use query() for one")
        body = query_body("", options)
        body.pop("query")
        body["queries"] = list(texts)
        data = self._post(BATCH_PATH, body)
        results = data.get("results") if isinstance(data, Mapping) else None
        if not isinstance(results, list):
            raise self._unreadable(f"no 'results' list in {str(data)[:100]!r}")
        return [self._result(r) for r in results]


QUERY_OPTIONS = (
    "layers",
    "n_results",
    "where",
    "where_document",
    "include",
    "min_score",
    "mode",
    "alpha",
    "include_history",
    "route_tags",
    "expand",
    "layer_min",
    "explain",
)


def query_body(text: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``QueryRequest`` JSON; an option the server does not take fails here, not there."""
    unknown = sorted(set(options) - set(QUERY_OPTIONS))
    if "principal" in unknown:
        raise errors.InvalidInput(
            "a remote knowledge base takes no principal: the server derives it from the token",
            hint="use a token with the clearance you need (`osp token create --clearance N`)",
        )
    if unknown:
        raise errors.InvalidInput(
            f"unknown query option(s) {', '.join(unknown)}",
            hint=f"known: {', '.join(QUERY_OPTIONS)}",
        )
    body: dict[str, Any] = {"query": text}
    for key, value in options.items():
        if value is None:
            continue  # the server's default
        if key == "layers" and isinstance(value, str):
            value = [value]
        elif key in ("layers", "include") and not isinstance(value, str):
            value = list(value)
        body[key] = value
    return body
