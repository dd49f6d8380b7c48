"""RemoteKnowledgeBase: configuration, error mapping, an unreachable server, and (once the
server module is there) a real ``osp serve`` app under uvicorn with a clearance-2 token."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import osprag
from osprag import (
    AccessDenied,
    ConfigError,
    InvalidFilter,
    InvalidInput,
    KnowledgeBase,
    LayerNotFound,
    Settings,
    StoreUnavailable,
)
from osprag.client import RemoteKnowledgeBase, error_from_response, query_body
from osprag.errors import RateLimited, Unauthorized

from .integration_corpus import QUESTION, READER, SECRET_ID, fill, serve_in_thread
from .server_helpers import token_value


def _response(status: int, body: object = None, text: str = "", **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://osp.test/api/v1/query")
    if body is not None:
        return httpx.Response(status, json=body, headers=headers, request=request)
    return httpx.Response(status, text=text, headers=headers, request=request)


def test_error_bodies_become_the_servers_error_class() -> None:
    err = error_from_response(
        _response(404, {"error": "layer_not_found", "message": "unknown layer 'x'"}),
        token_given=True,
    )
    assert type(err) is LayerNotFound and str(err) == "unknown layer 'x'"
    bad = _response(400, {"error": "invalid_filter", "message": "bad where"})
    assert type(error_from_response(bad, token_given=True)) is InvalidFilter
    denied = error_from_response(
        _response(401, {"error": "unauthorized", "message": "no token"}), token_given=False
    )
    assert type(denied) is Unauthorized and "OSP_REMOTE_TOKEN" in str(denied)
    limited = error_from_response(
        _response(429, {"error": "rate_limited", "message": "slow down"}, **{"Retry-After": "2"}),
        token_given=True,
    )
    assert type(limited) is RateLimited and limited.retry_after == 2.0
    # Codes this client does not know (a newer server) fall back on the status ...
    newer = error_from_response(
        _response(403, {"error": "quota_exceeded", "message": "over quota"}), token_given=True
    )
    assert type(newer) is AccessDenied and str(newer) == "over quota"
    # ... and so do bodies that are not osprag's (a proxy's error page).
    proxy = error_from_response(_response(502, text="<html>Bad Gateway</html>"), token_given=True)
    assert type(proxy) is StoreUnavailable and "HTTP 502" in str(proxy)


def test_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OSP_REMOTE_URL"):
        RemoteKnowledgeBase()
    with pytest.raises(ConfigError, match="http"):
        RemoteKnowledgeBase("localhost:8765")
    monkeypatch.setenv("OSP_REMOTE_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("OSP_REMOTE_TOKEN_FILE", "/nonexistent/token")
    with pytest.raises(ConfigError, match="OSP_REMOTE_TOKEN_FILE"):
        RemoteKnowledgeBase()
    monkeypatch.setenv("OSP_REMOTE_TOKEN", "osp_secret")
    with RemoteKnowledgeBase() as remote:
        assert remote.url == "http://127.0.0.1:1" and "osp_secret" not in repr(remote)
    with pytest.raises(InvalidInput, match="no principal"):
        query_body("q", {"principal": object()})
    with pytest.raises(InvalidInput, match="unknown query option"):
        query_body("q", {"top_k": 3})
    assert query_body("q", {"layers": "kern", "n_results": 3, "mode": None}) == {
        "query": "q",
        "layers": ["kern"],
        "n_results": 3,
    }


def test_server_down_is_store_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with RemoteKnowledgeBase(f"http://127.0.0.1:{port}", timeout=2) as remote:
        with pytest.raises(StoreUnavailable, match="not reachable.*osp serve"):
            remote.query("Crimphöhe")


def test_import_osprag_does_not_import_the_frameworks() -> None:
    code = (
        "import sys, osprag, osprag.client, osprag.integrations._common\n"
        "osprag.KnowledgeBase\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('llama_index', 'langchain')))\n"
        "assert not bad, bad\n"
    )
    src = str(Path(osprag.__file__).parents[1])  # this checkout, not the venv's install
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


@pytest.fixture
def storage() -> str:
    """Embedded only here: the server mode's clearance filter is covered by test_server.py."""
    return "embedded"


@pytest.fixture
def remote_url(kb: KnowledgeBase, settings: Settings, tmp_path: Path) -> Iterator[str]:
    fill(kb)
    with serve_in_thread(kb, settings, tmp_path) as url:
        yield url


def test_remote_query_matches_local_under_the_tokens_clearance(
    remote_url: str, kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSP_REMOTE_URL", remote_url)
    monkeypatch.setenv("OSP_REMOTE_TOKEN", token_value("reader2"))
    with RemoteKnowledgeBase() as remote:
        assert remote.whoami()["clearance"] == 2
        got = remote.query(QUESTION, n_results=10, mode="hybrid")
        local = kb.query(QUESTION, n_results=10, mode="hybrid", principal=READER)
        assert [h.id for h in got.hits] == [h.id for h in local.hits]
        assert SECRET_ID not in [h.id for h in got.hits]
        assert got.hits[0].to_dict() == local.hits[0].to_dict()  # the same Hit, rebuilt
        batch = remote.query_batch([QUESTION, "8D-Bericht"], layers="kern", n_results=1)
        assert [r.hits[0].id for r in batch] == ["k-crimp", "k-8d"]
        assert asyncio.run(remote.aquery(QUESTION, n_results=1)).hits[0].id == "k-crimp"
        with pytest.raises(LayerNotFound, match="nope"):
            remote.query(QUESTION, layers=["nope"])
        with pytest.raises(InvalidInput, match="n_results"):
            remote.query(QUESTION, n_results=0)
    with RemoteKnowledgeBase(remote_url, token="") as anonymous:
        with pytest.raises(Unauthorized, match="OSP_REMOTE_TOKEN"):
            anonymous.query(QUESTION)
    with RemoteKnowledgeBase(remote_url, token="osp_wrong") as wrong:
        with pytest.raises(Unauthorized, match="unknown or revoked"):
            wrong.query(QUESTION)
