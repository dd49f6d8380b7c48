"""Embedding identity, model resolution, prefixes, the remote backend, the cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from osprag import ModelNotFound, Settings
from osprag.embed_cache import CachingEmbedder, EmbeddingCache
from osprag.embedding import (
    Embedder,
    RemoteEmbedder,
    bundled_minilm_path,
    family_prefixes,
    read_identity,
    resolve_model_path,
)


def test_bundled_model_resolves_offline() -> None:
    folder = resolve_model_path("all-MiniLM-L6-v2")
    assert folder == bundled_minilm_path()
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == folder
    ident = read_identity("all-MiniLM-L6-v2", folder, True)
    assert (ident.dimension, ident.pooling, ident.max_seq_length) == (384, "mean", 256)
    assert len(ident.weights_sha256) == 32


def test_missing_model_says_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model_path("intfloat/multilingual-e5-small-does-not-exist")
    assert "OSP_EMBEDDING_MODEL" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound):
        resolve_model_path(str(tmp_path / "empty"))


def test_model_by_path(embedder: Embedder) -> None:
    folder = bundled_minilm_path()
    assert folder is not None
    ident = read_identity(str(folder), folder, True)
    assert ident.weights_sha256 == embedder.identity.weights_sha256


def test_family_prefixes() -> None:
    assert family_prefixes("intfloat/multilingual-e5-small", None) == ("query: ", "passage: ")
    q, p = family_prefixes("BAAI/bge-small-en-v1.5", None)
    assert q.startswith("Represent this sentence") and p == ""
    assert family_prefixes("BAAI/bge-m3", None) == ("", "")
    assert family_prefixes("sentence-transformers/all-MiniLM-L6-v2", None) == ("", "")


def test_vectors_normalised_and_semantic(embedder: Embedder) -> None:
    docs = embedder.embed_documents(["Crimp height tolerance", "Holiday schedule"])
    q = embedder.embed_queries(["How tall must the crimp be?"])
    assert docs.dtype == np.float32 and docs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    sims = docs @ q[0]
    assert sims[0] > sims[1]


def test_embedding_cache_never_embeds_twice(tmp_path: Path, embedder: Embedder) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    ce = CachingEmbedder(embedder, cache)
    first = ce.embed_documents(["eins", "zwei", "eins"])
    assert (ce.misses, ce.hits) == (3, 0)  # per text; the repeated text is embedded once
    second = ce.embed_documents(["zwei", "eins", "drei"])
    assert ce.hits == 2
    assert np.allclose(second[0], first[1]) and np.allclose(second[1], first[0])
    assert cache.count() == 3
    cache.close()
    reopened = CachingEmbedder(embedder, EmbeddingCache(tmp_path / "e.sqlite"))
    reopened.embed_documents(["eins"])
    assert reopened.hits == 1 and reopened.misses == 0


class _Handler(BaseHTTPRequestHandler):
    calls: list[dict[str, object]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.calls.append({"body": body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/embeddings":
            self.send_response(404)
            self.end_headers()
            return
        data = [
            {"index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in enumerate(body["input"])
        ]
        payload = json.dumps({"data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def embedding_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_backend_protocol(embedding_server: str) -> None:
    e = RemoteEmbedder(
        model="intfloat/multilingual-e5-small", url=embedding_server, api_key="k", batch_size=2
    )
    assert e.identity.dimension == 3
    assert e.identity.query_prefix == "query: "
    vecs = e.embed_documents(["a", "bb", "ccc"])
    assert vecs.shape == (3, 3)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    last = _Handler.calls[-1]
    assert last["auth"] == "Bearer k"
    assert last["body"]["input"] == ["passage: ccc"]  # type: ignore[index]


def test_remote_backend_down_is_clear() -> None:
    from osprag import EmbeddingError

    e = RemoteEmbedder(model="m", url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(EmbeddingError) as info:
        e.embed_queries(["x"])
    assert "127.0.0.1:9" in str(info.value)


def test_create_embedder_shares_instances() -> None:
    from osprag.embedding import create_embedder

    s = Settings(embedding_backend="torch")
    assert create_embedder(s) is create_embedder(Settings(embedding_backend="torch"))



def test_switch_to_wal_waits_out_another_process_opening_the_file(tmp_path: Path) -> None:
    """`osp serve --workers N` opens the same new cache file from N processes together, and
    SQLite may answer the WAL switch with "database is locked" at once (as here, where the
    other side holds the file longer than this connection's busy timeout): it is retried."""
    import sqlite3
    import time

    from osprag.generations import enable_wal

    path = tmp_path / "shared.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("CREATE TABLE t (x)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    mine = sqlite3.connect(path, timeout=0.05)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            mine.execute("PRAGMA journal_mode=WAL")  # what the cache used to do
        started = time.monotonic()
        enable_wal(mine)
        assert mine.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert time.monotonic() - started < 5
    finally:
        release.join()
        mine.close()
        other.close()
