"""What cross-process freshness and the result cache cost per query, in one run.

Two knowledge bases share one store: A writes, B answers queries (server mode: its own cache
dir, so its own lexical index, caught up through the write log). Measured on B, medians:

- ``catch_up()`` when nothing changed (embedded: one registry read; server: registry + log read),
  and with ``OSP_FRESHNESS_INTERVAL=1`` (skipped: no Chroma call);
- a catch-up that applies one remote write of one chunk;
- a lexical query with the cache off (the catch-up is part of it) and a cache hit.

Corpus: the GermanQuAD dev paragraphs (474) split over both layers.

    .venv/bin/python bench/freshness.py [--rounds 200] [--chroma-url URL]

Without ``--chroma-url`` a ``chroma run`` server is started on a free port for the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Settings  # noqa: E402
from osprag.embedding import Embedder, create_embedder  # noqa: E402


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def start_server(path: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("chroma server did not start")


def measure(
    mode: str, tmp: Path, url: str | None, embedder: Embedder, rounds: int
) -> dict[str, float]:
    corpus = [json.loads(x) for x in (EVAL / "germanquad-dev" / "corpus.jsonl").open()]
    queries = [json.loads(x)["text"] for x in (EVAL / "germanquad-dev" / "queries.jsonl").open()]
    common = {"embedding_backend": "torch", "embedding_cache": False, "data_dir": tmp / mode}
    if mode == "server":
        common.update(chroma_url=url, chroma_database=f"b_{uuid.uuid4().hex[:8]}")
    a_settings = Settings(storage=mode, cache_dir=tmp / f"{mode}-a", **common)  # type: ignore[arg-type]
    a = KnowledgeBase.open(a_settings, embedder=embedder)
    half = len(corpus) // 2
    for layer, docs in (("kern", corpus[:half]), ("erweitert", corpus[half:])):
        a.add(layer, [d["text"] for d in docs], ids=[d["_id"] for d in docs])
    b_settings = a_settings.model_copy(update={"cache_dir": tmp / f"{mode}-b"})
    b = KnowledgeBase.open(b_settings, embedder=embedder, read_only=mode == "embedded")
    b.query("warm up", mode="lexical")
    out = {"catch_up": median_ms(b.catch_up, rounds)}
    qs = iter(queries * 10)
    out["query_nocache"] = median_ms(
        lambda: b.query(next(qs), mode="lexical", use_cache=False), rounds
    )
    b.query("Crimphöhe", mode="lexical")
    out["query_cached"] = median_ms(lambda: b.query("Crimphöhe", mode="lexical"), rounds)
    counter = iter(range(10**6))

    def write_then_catch_up() -> None:
        a.upsert("kern", [f"neuer Text {next(counter)}"], ids=["bench-x"])
        t0 = time.perf_counter()
        b.catch_up()
        applied.append((time.perf_counter() - t0) * 1000)

    applied: list[float] = []
    for _ in range(max(5, rounds // 10)):
        write_then_catch_up()
    out["catch_up_one_write"] = statistics.median(applied)
    interval = b_settings.model_copy(update={"freshness_interval": 1.0})
    b.close()
    c = KnowledgeBase.open(interval, embedder=embedder, read_only=mode == "embedded")
    c.catch_up()
    out["catch_up_interval"] = median_ms(c.catch_up, rounds)
    c.close()
    a.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--chroma-url")
    args = parser.parse_args()
    embedder = create_embedder(Settings(embedding_backend="torch"))
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        proc = None
        url = args.chroma_url
        if url is None:
            proc, url = start_server(tmp / "chroma")
        try:
            for mode in ("embedded", "server"):
                rows.append((mode, measure(mode, tmp, url, embedder, args.rounds)))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    lines = [
        "Two knowledge bases on one store, B measured (`bench/freshness.py`, "
        f"{args.rounds} rounds, medians in ms; 474 GermanQuAD paragraphs, lexical mode).",
        "",
        "| storage | catch-up, nothing new | catch-up, interval 1 s | catch-up after 1 remote "
        "write | query, cache off | query, cache hit |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in rows:
        lines.append(
            f"| {mode} | {r['catch_up']:.2f} | {r['catch_up_interval']:.3f} | "
            f"{r['catch_up_one_write']:.2f} | {r['query_nocache']:.2f} | {r['query_cached']:.2f} |"
        )
    lines += ["", machine_line()]
    body = "\n".join(lines)
    print(body)
    write_section("freshness", "Cross-process freshness and the result cache", body)


if __name__ == "__main__":
    main()
