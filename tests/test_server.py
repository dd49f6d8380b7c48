"""The HTTP API over a real KB in both storage modes: auth, clearance, documents, uploads,
errors, health, metrics and the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from osprag import KnowledgeBase, Settings
from osprag.errors import ConfigError
from osprag.server import create_app

from .server_helpers import CANARY, auth, serve_settings, write_corpus, write_tokens


@pytest.fixture
def client(kb: KnowledgeBase, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    srv = serve_settings(settings, tmp_path)
    write_tokens(srv.server.tokens_file)  # type: ignore[arg-type]
    kb.settings = srv
    kb.ingest([write_corpus(tmp_path / "corpus")], "kern")
    with TestClient(create_app(srv, kb=kb)) as c:
        yield c


def _texts(body: dict) -> str:  # type: ignore[type-arg]
    return json.dumps(body, ensure_ascii=False)


def test_clearance_holds_on_every_read(client: TestClient, tmp_path: Path) -> None:
    q = {"query": "Crimphöhe Crimpen", "n_results": 10}
    low = client.post("/api/v1/query", json=q, headers=auth("reader2"))
    high = client.post("/api/v1/query", json=q, headers=auth("reader4"))
    assert low.status_code == high.status_code == 200
    for level in (3, 4):  # paired: the same request under clearance 4 returns the canary
        assert CANARY[level] not in low.text
        assert CANARY[level] in high.text
    assert {h["metadata"]["access_level"] for h in low.json()["hits"]} <= {1, 2}
    # a client filter cannot widen clearance
    wide = dict(q, where={"access_level": {"$gte": 3}})
    assert client.post("/api/v1/query", json=wide, headers=auth("reader2")).json()["hits"] == []
    batch = client.post(
        "/api/v1/query/batch",
        json={"queries": ["geheim Kosten", "vertraulich"]},
        headers=auth("reader2"),
    )
    assert batch.status_code == 200 and CANARY[4] not in batch.text and CANARY[3] not in batch.text

    docs_low = client.get("/api/v1/documents", headers=auth("reader2")).json()
    docs_high = client.get("/api/v1/documents", headers=auth("reader4")).json()
    assert docs_low["total"] == 2 and docs_high["total"] == 4
    secret = next(d for d in docs_high["documents"] if d["access_level"] == 4)
    assert (
        client.get(f"/api/v1/documents/{secret['id']}", headers=auth("reader2")).status_code == 404
    )
    opened = client.get(f"/api/v1/documents/{secret['id']}", headers=auth("reader4"))
    assert opened.status_code == 200 and CANARY[4] in opened.text
    assert (
        client.get(f"/api/v1/documents/{secret['id']}/file", headers=auth("reader2")).status_code
        == 404
    )
    raw = client.get(f"/api/v1/documents/{secret['id']}/file", headers=auth("reader4"))
    assert raw.status_code == 200 and CANARY[4] in raw.text
    layers = client.get("/api/v1/layers", headers=auth("reader2")).json()["layers"]
    assert layers[0]["name"] == "kern" and layers[0]["count"] == 2

    # every level-3/4 read is in the audit log, with who and which document
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines and {x["who"] for x in lines} == {"reader4"}
    assert {x["access_level"] for x in lines} == {3, 4}
    assert {"query", "document", "file"} <= {x["route"] for x in lines}


def test_auth_roles_and_errors(client: TestClient) -> None:
    r = client.post("/api/v1/query", json={"query": "Crimphöhe"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post("/api/v1/query", json={"query": "x"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = client.get("/api/v1/stats", headers=auth("reader4"))
    assert r.status_code == 403 and r.json()["error"] == "access_denied"
    assert client.get("/api/v1/stats", headers=auth("admin4")).status_code == 200
    r = client.delete("/api/v1/documents/whatever", headers=auth("reader4"))
    assert r.status_code == 403
    r = client.post("/api/v1/query", json={"query": ""}, headers=auth("reader2"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_input"
    r = client.post(
        "/api/v1/query", json={"query": "x", "where": {"$bogus": 1}}, headers=auth("reader2")
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_filter"
    r = client.get("/api/v1/nothing-here", headers=auth("reader2"))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"store", "model", "lexical"}
    assert client.get("/metrics").status_code == 401
    client.post("/api/v1/query", json={"query": "Crimphöhe"}, headers=auth("reader2"))
    metrics = client.get("/metrics", headers=auth("reader2")).text
    assert "osp_query_seconds_bucket" in metrics and 'code="unauthorized"' in metrics
    who = client.get("/api/v1/whoami", headers=auth("editor2")).json()
    assert who == {"name": "editor2", "role": "editor", "clearance": 2, "auth": "token"}


def test_proxy_user_header_only_from_proxy_tokens(client: TestClient) -> None:
    header = "X-OpenWebUI-User-Email"
    q = {"query": "Reklamation geheim Kosten", "n_results": 10}
    anna = client.post(
        "/api/v1/query", json=q, headers={**auth("proxy4"), header: "anna@example.com"}
    )
    chef = client.post(
        "/api/v1/query", json=q, headers={**auth("proxy4"), header: "chef@example.com"}
    )
    assert CANARY[4] not in anna.text and CANARY[4] in chef.text
    unknown = client.post("/api/v1/query", json=q, headers={**auth("proxy4"), header: "x@y.z"})
    assert unknown.status_code == 403
    # the header from a non-proxy token changes nothing
    sneaky = client.post(
        "/api/v1/query", json=q, headers={**auth("reader2"), header: "chef@example.com"}
    )
    assert sneaky.status_code == 200 and CANARY[4] not in sneaky.text
    who = client.get(
        "/api/v1/whoami", headers={**auth("proxy4"), header: "Anna@Example.com"}
    ).json()
    assert who["clearance"] == 2 and who["auth"] == "proxied"


def test_upload_replace_delete_and_bad_files(client: TestClient, tmp_path: Path) -> None:
    files = {
        "file": ("neu.md", b"# Neu\n\nSchliffbild Auswertung Crimpquerschnitt.\n", "text/markdown")
    }
    r = client.post(
        "/api/v1/documents",
        files=files,
        data={"layer": "kern", "access_level": "2"},
        headers=auth("editor2"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["report"]["counts"]["added"] == 1
    hits = client.post(
        "/api/v1/query", json={"query": "Schliffbild Crimpquerschnitt"}, headers=auth("reader2")
    ).json()["hits"]
    assert hits and hits[0]["metadata"]["source"] == "neu.md"
    # a corrupt replacement fails with 422 and the stored version stays searchable
    bad = {"file": ("neu.md", b"\x00\x01\x02" * 10, "text/markdown")}
    broken = {"file": ("kaputt.pdf", b"%PDF-1.7 not really", "application/pdf")}
    r = client.post(
        "/api/v1/documents", files=broken, data={"layer": "kern"}, headers=auth("editor2")
    )
    assert r.status_code == 422 and r.json()["error"] == "ingest_error"
    r = client.post("/api/v1/documents", files=bad, data={"layer": "kern"}, headers=auth("editor2"))
    assert r.status_code in (200, 422)
    hits = client.post(
        "/api/v1/query", json={"query": "Schliffbild Crimpquerschnitt"}, headers=auth("reader2")
    ).json()["hits"]
    assert hits and hits[0]["metadata"]["source"] == "neu.md"
    r = client.post(
        "/api/v1/documents",
        files={"file": ("../../etc/passwd.md", b"x", "x/y")},
        data={"layer": "kern"},
        headers=auth("editor2"),
    )
    assert r.status_code == 200 and r.json()["report"]["files"][0]["source"] == "passwd.md"
    assert not (tmp_path / "etc").exists()  # a path in the name is reduced to its base name
    for name, data, code in [
        (".versteckt.md", b"x", 400),
        ("programm.exe", b"MZ", 400),
    ]:
        r = client.post(
            "/api/v1/documents",
            files={"file": (name, data, "x/y")},
            data={"layer": "kern"},
            headers=auth("editor2"),
        )
        assert r.status_code == code, (name, r.text)
    r = client.post(
        "/api/v1/documents", files=files, data={"layer": "nope"}, headers=auth("editor2")
    )
    assert r.status_code == 404 and r.json()["error"] == "layer_not_found"
    r = client.post(
        "/api/v1/documents",
        files=files,
        data={"layer": "kern", "access_level": "4"},
        headers=auth("editor2"),
    )
    assert r.status_code == 400  # cannot upload above one's own clearance
    docs = client.get("/api/v1/documents", headers=auth("editor2")).json()["documents"]
    new = next(d for d in docs if d["source"] == "neu.md")
    r = client.delete(f"/api/v1/documents/{new['id']}", headers=auth("editor2"))
    assert r.status_code == 200 and r.json()["chunks"] >= 1
    hits = client.post(
        "/api/v1/query", json={"query": "Schliffbild Crimpquerschnitt"}, headers=auth("reader2")
    ).json()["hits"]
    assert all(h["metadata"]["source"] != "neu.md" for h in hits)
    assert (
        client.delete(f"/api/v1/documents/{new['id']}", headers=auth("editor2")).status_code == 404
    )


def test_upload_size_limit_and_rate_limit(
    kb: KnowledgeBase, settings: Settings, tmp_path: Path
) -> None:
    srv = serve_settings(settings, tmp_path, max_upload_mb=0.001, rate_limit=2.0)
    write_tokens(srv.server.tokens_file)  # type: ignore[arg-type]
    with TestClient(create_app(srv, kb=kb)) as c:
        big = {"file": ("gross.txt", b"a" * 5000, "text/plain")}
        r = c.post("/api/v1/documents", files=big, data={"layer": "kern"}, headers=auth("editor2"))
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        codes = [c.get("/api/v1/whoami", headers=auth("reader2")).status_code for _ in range(8)]
        assert 429 in codes and codes[0] == 200
        limited = c.get("/api/v1/whoami", headers=auth("reader2"))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get("/api/v1/whoami", headers=auth("reader4")).status_code == 200  # per token
    assert not list((srv.data_dir / "uploads").rglob("*.txt"))


def test_bind_refused_without_token(kb: KnowledgeBase, settings: Settings, tmp_path: Path) -> None:
    srv = serve_settings(settings, tmp_path)
    with pytest.raises(ConfigError, match="without a token"):
        create_app(srv, kb=kb, host="0.0.0.0")
    with TestClient(create_app(srv, kb=kb, host="127.0.0.1")) as c:  # loopback, no tokens: local
        assert c.get("/api/v1/whoami").json()["clearance"] == 4
    secret = tmp_path / "secret"
    secret.write_text("osp_from_a_docker_secret\n")
    srv2 = serve_settings(settings, tmp_path, token_file=secret)
    with TestClient(create_app(srv2, kb=kb, host="0.0.0.0")) as c:
        assert c.get("/api/v1/whoami").status_code == 401
        r = c.get("/api/v1/whoami", headers={"Authorization": "Bearer osp_from_a_docker_secret"})
        assert r.json()["role"] == "admin"
