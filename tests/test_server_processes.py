"""Two real ``osp serve`` processes on one Chroma server (server storage, its own database, each
process with its own data dir as on two hosts): a document uploaded through A is found through
B, including B's lexical index, and a delete through B is gone from A."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import _free_port

TOKEN = "osp_two_processes_" + "t" * 25
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TERM = "Zweiprozesskanarie"  # one word the corpus has nowhere else


def start_server(
    tmp: Path, name: str, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    """One ``python -m osprag serve`` process; its log goes to ``<tmp>/<name>.log``."""
    port = _free_port()
    data = tmp / name
    data.mkdir()
    full = {
        **env,
        "OSP_DATA_DIR": str(data / "data"),
        "OSP_CACHE_DIR": str(data / "cache"),
        "OSP_MODEL_DIR": str(data / "models"),
        "OSP_BACKUP_DIR": str(data / "backups"),
    }
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "osprag", "-q", "serve", "--port", str(port), *args],
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {url} not ready in {timeout}s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _env(chroma_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_") or k == "PYTHONPATH"}
    env.update(
        HF_HUB_OFFLINE="1",
        OSP_STORAGE="server",
        OSP_CHROMA_URL=chroma_url,
        OSP_CHROMA_DATABASE=f"t_{uuid.uuid4().hex[:12]}",
        OSP_EMBEDDING_BACKEND="torch",
        OSP_SERVER__TOKEN=TOKEN,
        OSP_QUERY_CACHE="true",
    )
    return env


@pytest.fixture
def two_servers(chroma_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = _env(chroma_url)
    a, url_a = start_server(tmp_path, "a", env)
    b, url_b = start_server(tmp_path, "b", env)
    try:
        wait_ready(a, url_a, tmp_path / "a.log")
        wait_ready(b, url_b, tmp_path / "b.log")
        yield url_a, url_b
    finally:
        stop(a)
        stop(b)


def _sources(url: str, mode: str) -> list[str]:
    r = httpx.post(
        f"{url}/api/v1/query",
        json={"query": f"{TERM} Schliffbild", "mode": mode, "n_results": 5},
        headers=HEADERS,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [h["metadata"]["source"] for h in r.json()["hits"]]


def test_two_processes_share_one_chroma_server(two_servers: tuple[str, str]) -> None:
    a, b = two_servers
    # both answer (and cache) before the write, so a stale cache or index would show below
    assert _sources(a, "lexical") == _sources(b, "lexical") == []
    seed = httpx.post(
        f"{a}/api/v1/documents",
        files={"file": ("seed.md", b"# Seed\n\nCrimphoehe Grundlagen.\n", "text/markdown")},
        data={"layer": "kern", "access_level": "1"},
        headers=HEADERS,
        timeout=60,
    )
    assert seed.status_code == 200, seed.text
    before_b = _sources(b, "hybrid")
    assert "neu-zwei.md" not in before_b

    body = f"# Zwei Prozesse\n\nDas {TERM} Schliffbild zeigt den Crimpquerschnitt.\n"
    up = httpx.post(
        f"{a}/api/v1/documents",
        files={"file": ("neu-zwei.md", body.encode(), "text/markdown")},
        data={"layer": "kern", "access_level": "1"},
        headers=HEADERS,
        timeout=60,
    )
    assert up.status_code == 200, up.text
    for mode in ("lexical", "dense", "hybrid"):  # B's own lexical index caught up too
        assert _sources(b, mode)[:1] == ["neu-zwei.md"], mode
    docs = httpx.get(f"{b}/api/v1/documents", headers=HEADERS, timeout=30).json()["documents"]
    doc_id = next(d["id"] for d in docs if d["source"] == "neu-zwei.md")

    gone = httpx.delete(f"{b}/api/v1/documents/{doc_id}", headers=HEADERS, timeout=30)
    assert gone.status_code == 200 and gone.json()["deleted"] == doc_id
    for mode in ("lexical", "dense", "hybrid"):
        assert "neu-zwei.md" not in _sources(a, mode), mode
    assert httpx.get(f"{a}/api/v1/documents/{doc_id}", headers=HEADERS).status_code == 404
    assert _sources(a, "lexical") == _sources(b, "lexical") == []
    for url in (a, b):  # both still in sync with the store after the other's writes
        ready = httpx.get(f"{url}/health/ready", timeout=10).json()
        assert ready["status"] == "ok", ready


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes: the parent's children started by multiprocessing.spawn."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_share_one_data_dir_and_cache(chroma_url: str, tmp_path: Path) -> None:
    """`osp serve --workers 2` (the factory path each worker imports): both workers start on
    one data dir and keep answering; neither logs a traceback. The WAL race they can hit when
    opening a new cache together is tested deterministically in test_embedding.py."""
    proc, url = start_server(tmp_path, "w", _env(chroma_url), "--workers", "2")
    log = tmp_path / "w.log"
    try:
        wait_ready(proc, url, log)
        deadline = time.monotonic() + 120
        while len(_workers(proc.pid)) < 2:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.3)
        first = _workers(proc.pid)
        for _ in range(6):
            assert _sources(url, "hybrid") == []
        assert _workers(proc.pid) == first  # none died and was replaced
        assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
    finally:
        stop(proc)
