"""The access matrix: every route of the app, each probed as a clearance-2 caller and paired with
the same request under clearance 4 that must return the level-3/4 canaries.

It cannot pass vacuously: the routes come from the app itself (the OpenAPI paths and every
mounted route), a route without an entry in ``MATRIX`` fails the test, and every "nothing
leaked" assertion on a content route is paired with a clearance-4 request that must show the
canary — a route that returned nothing at all would fail the pair.

New routes add an entry to ``MATRIX`` (``LATER`` holds those of issue #7, ``/api/v1/answer``,
``/v1/models``, ``/v1/chat/completions``, applied where the app serves them): a function from
``Ctx`` to a list of ``Case``. A ``Case`` is one request twice, as
``low`` (clearance 2) and as ``high`` (clearance 4); ``expect`` says what must hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from osprag import KnowledgeBase, Settings
from osprag.server import create_app

from .server_helpers import CANARY, auth, serve_settings, write_corpus, write_tokens

SECRET = (3, 4)
# What a clearance-2 caller must never see: the canaries and the sources of the L3/L4 files.
LEAKS = [CANARY[3], CANARY[4], "crimpen-l3.md", "crimpen-l4.md", "geheim-upload.md"]
USER_HEADER = "X-OpenWebUI-User-Email"

Expect = Literal["content", "denied", "open"]


@dataclass
class Req:
    method: str
    url: str
    token: str | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, client: TestClient) -> Any:
        headers = {**(auth(self.token) if self.token else {}), **self.headers}
        return client.request(
            self.method,
            self.url,
            json=self.json,
            data=self.data,
            files=self.files,
            headers=headers,
        )


@dataclass
class Case:
    """``content``: low answers without any leak marker, high (status 200) shows every marker in
    ``must_show``. ``denied``: low gets ``low_status`` (403 role / 404 invisible / 400), high
    gets 200. ``open``: both 200, no marker in either (health, the page, docs)."""

    label: str
    low: Req
    high: Req
    expect: Expect
    must_show: tuple[str, ...] = ()
    low_status: tuple[int, ...] = (200,)
    after: Callable[[Ctx], None] | None = None
    echo: tuple[str, ...] = ()  # markers the low request sent itself (a file name it chose)
    forbid: tuple[str, ...] = ()  # more markers the low answer must not show


@dataclass
class Ctx:
    client: TestClient
    ids: dict[int, str]  # access level -> document id


def _low_high(
    label: str,
    method: str,
    url: str,
    *,
    must_show: tuple[str, ...] = (CANARY[3], CANARY[4]),
    low: str = "reader2",
    high: str = "reader4",
    low_status: tuple[int, ...] = (200,),
    **kw: Any,
) -> Case:
    return Case(
        label,
        Req(method, url, low, **kw),
        Req(method, url, high, **kw),
        "content",
        must_show,
        low_status,
    )


def _query_cases(ctx: Ctx) -> list[Case]:
    q = "Crimphöhe Crimpen Reklamation Lieferantenaudit"
    both = (CANARY[3], CANARY[4])
    filters: list[tuple[str, dict[str, Any]]] = [
        ("plain", {}),
        ("where $gte 3", {"where": {"access_level": {"$gte": 3}}}),
        ("where $in [3,4]", {"where": {"access_level": {"$in": [3, 4]}}}),
        ("where $ne 1", {"where": {"access_level": {"$ne": 1}}}),
        (
            "$or widen",
            {"where": {"$or": [{"access_level": {"$gte": 3}}, {"access_level": {"$lte": 4}}]}},
        ),
        (
            "$or doc_type",
            {"where": {"$or": [{"doc_type": "Bericht"}, {"doc_type": "Prüfplan"}]}},
        ),
        ("where_document", {"where_document": {"$contains": "Crimphöhe"}}),
        ("dense", {"mode": "dense"}),
        ("lexical", {"mode": "lexical"}),
        ("hybrid explain", {"mode": "hybrid", "explain": True}),
        ("history + layer_min", {"include_history": True, "layer_min": {"kern": 5}}),
        ("min_score 0", {"min_score": 0.0, "expand": True, "route_tags": True}),
    ]
    cases = [
        _low_high(
            f"query {name}",
            "POST",
            "/api/v1/query",
            json={"query": q, "n_results": 20, **opts},
            must_show=both,
        )
        for name, opts in filters
    ]
    # the proxy's user header from a non-proxy token is ignored; from the proxy token it counts
    cases.append(
        Case(
            "query proxy header",
            Req(
                "POST",
                "/api/v1/query",
                "reader2",
                json={"query": q, "n_results": 20},
                headers={USER_HEADER: "chef@example.com"},
            ),
            Req(
                "POST",
                "/api/v1/query",
                "proxy4",
                json={"query": q, "n_results": 20},
                headers={USER_HEADER: "chef@example.com"},
            ),
            "content",
            must_show=both,
        )
    )
    # a filter that only matches secret documents: the pair shows the filter really selects them
    cases.append(
        _low_high(
            "query where doc_type=Bericht",
            "POST",
            "/api/v1/query",
            json={"query": q, "where": {"doc_type": "Bericht"}},
            must_show=(CANARY[4],),
        )
    )
    return cases


def _batch_cases(ctx: Ctx) -> list[Case]:
    return [
        _low_high(
            "batch",
            "POST",
            "/api/v1/query/batch",
            json={
                "queries": ["Reklamation Kosten geheim", "Lieferantenaudit vertraulich"],
                "n_results": 10,
                "where": {"$or": [{"access_level": 3}, {"access_level": 4}]},
            },
        )
    ]


def _list_cases(ctx: Ctx) -> list[Case]:
    return [
        _low_high(
            "documents list",
            "GET",
            "/api/v1/documents?limit=1000",
            must_show=("crimpen-l3.md", "crimpen-l4.md"),
        ),
        _low_high(
            "documents list layer",
            "GET",
            "/api/v1/documents?layer=kern&offset=0",
            must_show=("crimpen-l3.md", "crimpen-l4.md"),
        ),
    ]


def _doc_cases(ctx: Ctx) -> list[Case]:
    return [
        _low_high(
            f"document L{level}",
            "GET",
            f"/api/v1/documents/{ctx.ids[level]}",
            must_show=(CANARY[level],),
            low_status=(404,),
        )
        for level in SECRET
    ]


def _file_cases(ctx: Ctx) -> list[Case]:
    return [
        _low_high(
            f"file L{level}",
            "GET",
            f"/api/v1/documents/{ctx.ids[level]}/file",
            must_show=(CANARY[level],),
            low_status=(404,),
        )
        for level in SECRET
    ]


def _check_layers(ctx: Ctx) -> None:
    low = ctx.client.get("/api/v1/layers", headers=auth("reader2")).json()["layers"]
    high = ctx.client.get("/api/v1/layers", headers=auth("reader4")).json()["layers"]
    assert {x["name"]: x["count"] for x in low}["kern"] == 2  # counts leak nothing either
    assert {x["name"]: x["count"] for x in high}["kern"] == 4


def _layers_cases(ctx: Ctx) -> list[Case]:
    case = _low_high("layers", "GET", "/api/v1/layers", must_show=())
    case.after = _check_layers
    return [case]


def _stats_cases(ctx: Ctx) -> list[Case]:
    return [
        Case(
            "stats (admin only)",
            Req("GET", "/api/v1/stats", "reader4"),
            Req("GET", "/api/v1/stats", "admin4"),
            "denied",
            low_status=(403,),
        )
    ]


def _whoami_cases(ctx: Ctx) -> list[Case]:
    return [
        Case(
            "whoami",
            Req("GET", "/api/v1/whoami", "reader2"),
            Req("GET", "/api/v1/whoami", "reader4"),
            "content",
            must_show=('"clearance":4',),
            forbid=('"clearance":4',),
        ),
        # the user header from a non-proxy token changes nothing; from the proxy token it does
        Case(
            "whoami proxy header",
            Req("GET", "/api/v1/whoami", "reader2", headers={USER_HEADER: "chef@example.com"}),
            Req("GET", "/api/v1/whoami", "proxy4", headers={USER_HEADER: "chef@example.com"}),
            "content",
            must_show=('"clearance":4',),
            forbid=('"clearance":4', "chef@example.com"),
        ),
    ]


def _metrics_cases(ctx: Ctx) -> list[Case]:
    return [_low_high("metrics", "GET", "/metrics", must_show=("osp_",))]


def _open_case(label: str, url: str) -> Callable[[Ctx], list[Case]]:
    def build(ctx: Ctx) -> list[Case]:
        return [Case(label, Req("GET", url), Req("GET", url, "reader4"), "open")]

    return build


def _upload(name: str, text: str, **form: str) -> dict[str, Any]:
    return {
        "files": {"file": (name, text.encode("utf-8"), "text/markdown")},
        "data": {"layer": "kern", **form},
    }


def _upload_cases(ctx: Ctx) -> list[Case]:
    body = "# Geheimer Upload\n\nSchliffbild Reklamation Upload. " + CANARY[4] + "\n"
    secret = _upload("geheim-upload.md", body, access_level="4")
    low_ok = _upload("intern-upload.md", "# Intern\n\nSchliffbild intern Upload.\n")
    # front matter naming level 4 from an editor with clearance 2: refused like the form field
    sneaky = _upload("sneaky-upload.md", "---\naccess_level: 4\n---\n# S\n\nSchliffbild.\n")
    return [
        Case(
            "upload L4 (reader: role)",
            Req("POST", "/api/v1/documents", "reader2", **secret),
            Req("POST", "/api/v1/documents", "admin4", **secret),
            "denied",
            low_status=(403,),
        ),
        Case(
            "upload L4 (editor2: above clearance)",
            Req("POST", "/api/v1/documents", "editor2", **secret),
            Req("POST", "/api/v1/documents", "admin4", **secret),
            "denied",
            low_status=(400,),
            after=_check_uploaded_secret,
        ),
        Case(
            "upload front matter L4 (editor2)",
            Req("POST", "/api/v1/documents", "editor2", **sneaky),
            Req("POST", "/api/v1/documents", "editor2", **low_ok),
            "denied",
            low_status=(422,),
            after=_check_default_level,
        ),
        Case(
            "upload replacing an L4 document (editor2)",
            Req(
                "POST",
                "/api/v1/documents",
                "editor2",
                **_upload("geheim-upload.md", "# Ersatz\n\nSchliffbild.\n", access_level="2"),
            ),
            Req("GET", "/api/v1/documents?limit=1000", "admin4"),
            "denied",
            low_status=(422,),
            after=_check_uploaded_secret,
            echo=("geheim-upload.md",),
        ),
    ]


def _check_default_level(ctx: Ctx) -> None:
    """A file naming no level, uploaded at clearance 2, gets level 2 (not the layer's default 4,
    which its uploader could neither write nor read back); the refused one is not stored."""
    docs = ctx.client.get("/api/v1/documents?limit=1000", headers=auth("admin4")).json()
    levels = {d["source"]: d["access_level"] for d in docs["documents"]}
    assert levels["intern-upload.md"] == 2 and "sneaky-upload.md" not in levels


def _check_uploaded_secret(ctx: Ctx) -> None:
    """The L4 upload is searchable at clearance 4, unchanged, and invisible at clearance 2."""
    q = {"query": "Schliffbild Reklamation Upload", "n_results": 10}
    high = ctx.client.post("/api/v1/query", json=q, headers=auth("reader4"))
    low = ctx.client.post("/api/v1/query", json=q, headers=auth("reader2"))
    assert CANARY[4] in high.text and "geheim-upload.md" in high.text
    assert not any(m in low.text for m in LEAKS)


def _delete_cases(ctx: Ctx) -> list[Case]:
    # the throwaway document is the L4 upload of _upload_cases (run before this entry)
    docs = ctx.client.get("/api/v1/documents?limit=1000", headers=auth("admin4")).json()
    upload_id = next(d["id"] for d in docs["documents"] if d["source"] == "geheim-upload.md")
    return [
        Case(
            "delete L4 (reader: role)",
            Req("DELETE", f"/api/v1/documents/{ctx.ids[4]}", "reader4"),
            Req("GET", f"/api/v1/documents/{ctx.ids[4]}", "reader4"),
            "denied",
            low_status=(403,),
        ),
        Case(
            "delete L4 (editor2: invisible)",
            Req("DELETE", f"/api/v1/documents/{upload_id}", "editor2"),
            Req("DELETE", f"/api/v1/documents/{upload_id}", "admin4"),
            "denied",
            low_status=(404,),
        ),
    ]


ASK = "Reklamation Crimphöhe Kunde geheim Kosten Lieferantenaudit vertraulich"


def _answer_cases(ctx: Ctx) -> list[Case]:
    widen = {"$or": [{"access_level": {"$gte": 3}}, {"access_level": {"$lte": 4}}]}
    return [
        _low_high("answer", "POST", "/api/v1/answer", json={"question": ASK, "n_sources": 10}),
        _low_high(
            "answer $or widen",
            "POST",
            "/api/v1/answer",
            json={"question": ASK, "n_sources": 10, "where": widen, "use_llm": False},
        ),
        _low_high(
            "answer stream",
            "POST",
            "/api/v1/answer",
            json={"question": ASK, "n_sources": 10, "stream": True},
        ),
    ]


def _models_cases(ctx: Ctx) -> list[Case]:
    return [_low_high("models", "GET", "/v1/models", must_show=('"osprag"',))]


def _chat_cases(ctx: Ctx) -> list[Case]:
    body = {"model": "osprag", "messages": [{"role": "user", "content": ASK}]}
    chef = {USER_HEADER: "chef@example.com"}
    return [
        _low_high("chat", "POST", "/v1/chat/completions", json=body),
        _low_high(
            "chat stream",
            "POST",
            "/v1/chat/completions",
            json={**body, "stream": True},
            must_show=("crimpen-l4.md",),
        ),
        Case(
            "chat proxy header",
            Req("POST", "/v1/chat/completions", "reader2", json=body, headers=chef),
            Req("POST", "/v1/chat/completions", "proxy4", json=body, headers=chef),
            "content",
            must_show=(CANARY[3], CANARY[4]),
        ),
    ]


Builder = Callable[[Ctx], list[Case]]

# (METHOD, path template) -> cases. Every route the app serves must have an entry; order matters
# only for the writes (upload before delete).
MATRIX: dict[tuple[str, str], Builder] = {
    ("POST", "/api/v1/query"): _query_cases,
    ("POST", "/api/v1/query/batch"): _batch_cases,
    ("GET", "/api/v1/whoami"): _whoami_cases,
    ("GET", "/api/v1/documents"): _list_cases,
    ("GET", "/api/v1/documents/{doc_id}"): _doc_cases,
    ("GET", "/api/v1/documents/{doc_id}/file"): _file_cases,
    ("GET", "/api/v1/layers"): _layers_cases,
    ("GET", "/api/v1/stats"): _stats_cases,
    ("GET", "/metrics"): _metrics_cases,
    ("GET", "/health/live"): _open_case("live", "/health/live"),
    ("GET", "/health/ready"): _open_case("ready", "/health/ready"),
    ("GET", "/"): _open_case("page", "/"),
    ("GET", "/static"): _open_case("static", "/static/index.html"),
    ("GET", "/openapi.json"): _open_case("openapi", "/openapi.json"),
    ("GET", "/docs"): _open_case("docs", "/docs"),
    ("GET", "/docs/oauth2-redirect"): _open_case("oauth2", "/docs/oauth2-redirect"),
    ("GET", "/redoc"): _open_case("redoc", "/redoc"),
    ("POST", "/api/v1/documents"): _upload_cases,
    ("DELETE", "/api/v1/documents/{doc_id}"): _delete_cases,
}


# Issue #7's answer and chat routes (written against main e5b2b02, where they landed): their
# entries join the matrix wherever the app serves them.
LATER: dict[tuple[str, str], Builder] = {
    ("POST", "/api/v1/answer"): _answer_cases,
    ("GET", "/v1/models"): _models_cases,
    ("POST", "/v1/chat/completions"): _chat_cases,
}


def matrix_for(app: FastAPI) -> dict[tuple[str, str], Builder]:
    served = served_routes(app)
    return {**MATRIX, **{k: v for k, v in LATER.items() if k in served}}


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers: its OpenAPI paths, ``/``, and all mounted routes
    (docs, static files), so nothing outside the schema escapes the matrix either."""
    out: set[tuple[str, str]] = {("GET", "/")}
    for path, ops in app.openapi()["paths"].items():
        out |= {(m.upper(), path) for m in ops}
    for r in app.routes:
        if isinstance(r, APIRoute | Route):
            out |= {(m, r.path) for m in (r.methods or ()) if m != "HEAD"}
        elif isinstance(r, Mount):
            out.add(("GET", r.path))
    return out


def missing_entries(app: FastAPI) -> set[tuple[str, str]]:
    return served_routes(app) - set(matrix_for(app))


def _text(resp: Any) -> str:
    """The body as compact JSON when it is JSON (so markers like '"clearance":4' match)."""
    try:
        return json.dumps(resp.json(), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return str(resp.text)


def _run(ctx: Ctx, case: Case) -> None:
    low = case.low.send(ctx.client)
    low_text = _text(low)
    leaked = [m for m in (*LEAKS, *case.forbid) if m in low_text and m not in case.echo]
    assert not leaked, f"{case.label}: clearance 2 received {leaked}"
    assert low.status_code in case.low_status, f"{case.label}: low {low.status_code} {low.text}"
    if low.status_code >= 400:
        err = low.json()
        assert set(err) == {"error", "message"}, f"{case.label}: error body {err}"
    high = case.high.send(ctx.client)
    assert high.status_code == 200, f"{case.label}: high {high.status_code} {high.text[:300]}"
    high_text = _text(high)
    if case.expect == "open":
        assert low.status_code == 200
        assert not any(m in high_text for m in LEAKS), f"{case.label}: open route shows content"
    for marker in case.must_show:
        assert marker in high_text, f"{case.label}: clearance 4 did not get {marker!r}"
    if case.after is not None:
        case.after(ctx)


@pytest.fixture
def ctx(kb: KnowledgeBase, settings: Settings, tmp_path: Path) -> Iterator[Ctx]:
    srv = serve_settings(settings, tmp_path, rate_limit=1000.0)
    srv = srv.model_copy(update={"answer_min_score": 0.0})  # answers always show sources
    write_tokens(srv.server.tokens_file)  # type: ignore[arg-type]
    kb.settings = srv
    kb.ingest([write_corpus(tmp_path / "corpus")], "kern")
    with TestClient(create_app(srv, kb=kb)) as client:
        docs = client.get("/api/v1/documents", headers=auth("reader4")).json()["documents"]
        ids = {d["access_level"]: d["id"] for d in docs}
        assert set(ids) == {1, 2, 3, 4}
        yield Ctx(client, ids)


def test_access_matrix_covers_every_route_and_leaks_nothing(ctx: Ctx) -> None:
    app: FastAPI = ctx.client.app  # type: ignore[assignment]
    missing = missing_entries(app)
    assert not missing, f"routes without an access-matrix entry (add them to MATRIX): {missing}"
    stale = set(MATRIX) - served_routes(app)
    assert not stale, f"MATRIX entries for routes the app no longer serves: {stale}"
    ran = 0
    for key, build in matrix_for(app).items():
        cases = build(ctx)
        assert cases, f"{key}: no cases"
        for case in cases:
            _run(ctx, case)
            ran += 1
    assert ran >= len(MATRIX) + 15


def test_query_cache_never_serves_clearance_4_hits_to_clearance_2(ctx: Ctx) -> None:
    """Cache on (serve_settings): the same query first at clearance 4, then at clearance 2, by
    token and through the proxy's user header; the cache hit counter proves the cache is used."""
    c = ctx.client
    q = {"query": "Reklamation Crimphöhe Kunde geheim Kosten", "n_results": 10}
    first = c.post("/api/v1/query", json=q, headers=auth("reader4"))
    again = c.post("/api/v1/query", json=q, headers=auth("reader4"))
    assert CANARY[4] in first.text and CANARY[4] in again.text
    hits_before = c.get("/api/v1/stats", headers=auth("admin4")).json()["cache"]
    assert hits_before.get("hits", 0) >= 1, hits_before  # the repeat was served from the cache
    low = c.post("/api/v1/query", json=q, headers=auth("reader2"))
    assert low.status_code == 200 and low.json()["hits"]
    assert not any(m in low.text for m in LEAKS)
    chef = {**auth("proxy4"), USER_HEADER: "chef@example.com"}
    anna = {**auth("proxy4"), USER_HEADER: "anna@example.com"}
    assert CANARY[4] in c.post("/api/v1/query", json=q, headers=chef).text
    proxied = c.post("/api/v1/query", json=q, headers=anna)
    assert proxied.status_code == 200 and not any(m in proxied.text for m in LEAKS)
    batch = c.post("/api/v1/query/batch", json={"queries": [q["query"]]}, headers=auth("reader2"))
    assert batch.status_code == 200 and not any(m in batch.text for m in LEAKS)


@pytest.mark.parametrize("storage", ["embedded"])
def test_a_new_route_without_an_entry_fails_the_matrix(
    kb: KnowledgeBase, settings: Settings, tmp_path: Path
) -> None:
    srv = serve_settings(settings, tmp_path)
    app = create_app(srv, kb=kb)
    assert missing_entries(app) == set()

    @app.post("/api/v1/summarise")
    def summarise() -> dict[str, str]:
        return {}

    app.openapi_schema = None
    assert missing_entries(app) == {("POST", "/api/v1/summarise")}
