"""bench/http_load.py: its load loop and query feed (cheap, every run), and the whole script as
a smoke run against a real ``osp serve`` process (slow)."""

from __future__ import annotations

import importlib
import math
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def http_load() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("http_load")
    finally:
        sys.path.remove(str(BENCH))


def test_query_feed_never_repeats_a_text(http_load: ModuleType) -> None:
    feed = http_load.QueryFeed(["a", "b", "c"])
    seen: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            q = feed.next()
            with lock:
                seen.append(q)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200 and len(set(seen)) == 200
    assert {"a", "b", "c", "a (1)"} <= set(seen)


def test_run_load_counts_answers_errors_and_the_ingest(http_load: ModuleType) -> None:
    calls = {"n": 0}
    lock = threading.Lock()

    def send(q: str) -> tuple[bool, str]:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        time.sleep(0.002)
        if n % 10 == 0:
            return False, "503 busy"
        if n % 25 == 0:
            raise httpx.ConnectError("refused")
        return True, ""

    def ingest(stop: threading.Event, result: object) -> None:
        while not stop.is_set():
            result.uploads += 1  # type: ignore[attr-defined]
            time.sleep(0.05)

    res = http_load.run_load(
        send, http_load.QueryFeed(["q"]), clients=4, seconds=0.5, ingest=ingest
    )
    total = len(res.latencies) + len(res.errors)
    assert total == calls["n"] > 20
    assert any(e == "503 busy" for e in res.errors)
    assert any(e.startswith("ConnectError") for e in res.errors)
    assert res.uploads >= 3 and 0 < res.qps and res.seconds >= 0.5
    assert all(ms >= 2.0 for ms in res.latencies)


def test_server_timing_header_is_read(http_load: ModuleType) -> None:
    resp = httpx.Response(200, headers={"server-timing": "app;dur=12.50"})
    assert http_load._server_ms(resp) == 12.5
    assert math.isnan(http_load._server_ms(httpx.Response(200)))


@pytest.mark.slow
def test_quick_run_end_to_end(http_load: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke run: sample corpus, a real server, 8 clients for 8 s with the uploader."""
    monkeypatch.chdir(BENCH.parent)
    out = http_load.main(["--quick", "--no-write"])
    load = out["load"]
    assert load.errors == [] and load.upload_errors == []
    assert load.qps > 1 and load.uploads >= 1
    row = out["rows"][0]
    assert row["chunks"] > 500 and len(row["inproc"]) == len(row["http"]["client"]) == 40
    assert out["rss_after_load"]["VmRSS"] > 100
