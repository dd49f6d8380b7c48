"""HTTP API under load: query latency over HTTP vs in-process, 8 clients while an ingest runs, RSS.

A real ``osp serve`` process (uvicorn, one worker, embedded storage, default backend = the
exported ONNX model as ``make run`` uses it), caches off (``OSP_QUERY_CACHE=false``, embedding
cache off), unique queries (GermanQuAD dev / XQuAD-de questions), every request with a
clearance-2 reader token, so every query carries the clearance filter.

Corpora: (a) the sample corpus as ``make run`` loads it (``osp ingest examples/osp-corpus/kern
--layer kern`` and ``…/erweitert --layer erweitert``); (b) 100k chunks of real text with real
vectors from ``scale_corpus.py`` (L1 35 / L2 35 / L3 20 / L4 10 %), written once into a store
kept under ``~/.cache/osprag-bench/http-100k-v1`` so reruns only read it.

Per corpus: each query over HTTP (one client at a time: client wall time, the server's own
time from the ``Server-Timing`` header) and through ``KnowledgeBase.query`` in this process on
the same data dir (the baseline), alternating which goes first; the ratio is the HTTP cost.
Load (sample corpus): N client threads (keep-alive ``httpx`` clients) for S seconds while one
more thread uploads the sample corpus files through the API back to back (new names each
round, i.e. a running ingest); errors of either count. RSS: the server process after warm-up
and after the load (steady, model loaded).

    .venv/bin/python bench/http_load.py              # sample + 100k, 8 clients x 60 s
    .venv/bin/python bench/http_load.py --quick      # smoke: sample only, 8 clients x 8 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale_corpus  # noqa: E402
from common import ROOT, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Principal, Settings  # noqa: E402
from osprag.ingest.sync import SUPPORTED  # noqa: E402
from osprag.server.auth import TokenEntry, TokenFile, hash_token  # noqa: E402

READER = "osp_bench_reader2_" + "r" * 26
EDITOR = "osp_bench_editor4_" + "e" * 26
CLEARANCE = 2
CORPUS = ROOT / "examples" / "osp-corpus"
STORE_100K = Path.home() / ".cache" / "osprag-bench" / "http-100k-v1"
TARGET_P50 = {"sample": 15.0, "100k": 30.0}
TARGET_QPS = 50.0
TARGET_RSS = 400.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load1() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------- stores


# --spin: ONNX query threads spinning in the server and the baseline alike (osp serve's default
# is off; the comparison behind that choice: run with and without --spin, --no-write).
SPIN = {"on": False}


def _env(data_dir: Path, tokens: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSP_")}
    env["OSP_EMBEDDING_SPIN"] = "true" if SPIN["on"] else "false"
    env.update(
        HF_HUB_OFFLINE="1",
        OSP_DATA_DIR=str(data_dir),
        OSP_QUERY_CACHE="false",
        OSP_EMBEDDING_CACHE="false",
        **extra,
    )
    if tokens is not None:
        env["OSP_SERVER__TOKENS_FILE"] = str(tokens)
    return env


def _osp(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "osprag", "-q", *args], env=env, check=True)


def build_sample(data_dir: Path) -> None:
    """As ``make run``: the two folders of the sample corpus into their layers."""
    env = _env(data_dir)
    for layer in ("kern", "erweitert"):
        _osp("ingest", str(CORPUS / layer), "--layer", layer, env=env)


def build_100k(data_dir: Path = STORE_100K) -> Path:
    """The 100k store, written once from the cached chunks and vectors."""
    done = data_dir / "complete.json"
    if done.exists():
        return data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    chunks, vectors = scale_corpus.load(100_000)
    settings = Settings(data_dir=data_dir, embedding_cache=False, query_cache=False)
    t0 = time.perf_counter()
    with KnowledgeBase.open(settings) as kb:
        for layer in ("kern", "erweitert"):
            idx = [i for i, c in enumerate(chunks) if c["layer"] == layer]
            for s in range(0, len(idx), 5000):
                part = idx[s : s + 5000]
                kb.add(
                    layer,
                    [chunks[i]["text"] for i in part],
                    ids=[chunks[i]["id"] for i in part],
                    metadatas=[{"access_level": chunks[i]["access_level"]} for i in part],
                    embeddings=np.asarray(vectors[part]),
                )
        kb.lexical_for(["kern", "erweitert"])
    done.write_text(json.dumps({"chunks": len(chunks), "build_s": time.perf_counter() - t0}))
    return data_dir


def write_tokens(path: Path) -> Path:
    tf = TokenFile(path)
    tf.tokens.append(TokenEntry("reader2", hash_token(READER), "reader", CLEARANCE, False, 1e6))
    tf.tokens.append(TokenEntry("editor4", hash_token(EDITOR), "editor", 4, False, 1e6))
    tf.save()
    return path


# ------------------------------------------------------------------------------- server


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, tokens: Path, log: Path, timeout: float = 300) -> Server:
    port = _free_port()
    fh = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "osprag", "-q", "serve", "--port", str(port), "--workers", "1"],
        env=_env(data_dir, tokens, OSP_SERVER__AUDIT_LOG=str(log.with_suffix(".audit.jsonl"))),
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"osp serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"osp serve not ready in {timeout}s: {log.read_text()[-2000:]}")


# ------------------------------------------------------------------------------- timing


def _server_ms(resp: httpx.Response) -> float:
    value = resp.headers.get("server-timing", "")
    for part in value.split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    return float("nan")


def time_pair(
    url: str, data_dir: Path, queries: list[str], warm: list[str]
) -> dict[str, list[float]]:
    """Each query once over HTTP (one client, keep-alive) and once through the Python API in
    this process (a read-only knowledge base on the same data dir, same principal, caches off,
    no per-query catch-up and no spinning ONNX threads, like the server that owns the dir),
    alternating which goes first,
    so host load hits both alike. Returns per query: client wall time, the server's own time
    (``Server-Timing``), the engine's ``timings_ms.total`` and the in-process wall time."""
    out: dict[str, list[float]] = {"client": [], "server": [], "engine": [], "inproc": []}
    settings = Settings(
        data_dir=data_dir,
        embedding_cache=False,
        query_cache=False,
        freshness_interval=1e9,
        embedding_spin=SPIN["on"],
    )
    who = Principal("reader2", clearance=CLEARANCE)
    headers = {"Authorization": f"Bearer {READER}"}
    with (
        KnowledgeBase.open(settings, read_only=True) as kb,
        httpx.Client(base_url=url, headers=headers, timeout=60) as client,
    ):

        def http(q: str) -> None:
            t0 = time.perf_counter()
            resp = client.post("/api/v1/query", json={"query": q})
            took = (time.perf_counter() - t0) * 1000
            resp.raise_for_status()
            out["client"].append(took)
            out["server"].append(_server_ms(resp))
            out["engine"].append(float(resp.json()["timings_ms"]["total"]))

        def local(q: str) -> None:
            t0 = time.perf_counter()
            kb.query(q, principal=who, use_cache=False)
            out["inproc"].append((time.perf_counter() - t0) * 1000)

        for q in warm:
            kb.query(q, principal=who, use_cache=False)
            client.post("/api/v1/query", json={"query": q}).raise_for_status()
        for i, q in enumerate(queries):
            first, second = (http, local) if i % 2 == 0 else (local, http)
            first(q)
            second(q)
    return out


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    uploads: int = 0
    upload_errors: list[str] = field(default_factory=list)
    chunks_written: int = 0

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


class QueryFeed:
    """Unique query texts for any number of threads; when the pool is used up it goes round
    again with a counter appended, so no text repeats (nothing a cache could serve)."""

    def __init__(self, pool: list[str]) -> None:
        self.pool = pool
        self._lock = threading.Lock()
        self._i = 0

    def next(self) -> str:
        with self._lock:
            i = self._i
            self._i += 1
        q = self.pool[i % len(self.pool)]
        return q if i < len(self.pool) else f"{q} ({i // len(self.pool)})"


def run_load(
    send: Callable[[str], tuple[bool, str]],
    feed: QueryFeed,
    *,
    clients: int,
    seconds: float,
    ingest: Callable[[threading.Event, LoadResult], None] | None = None,
) -> LoadResult:
    """``clients`` threads each sending queries back to back for ``seconds``; ``send`` returns
    (ok, error text); an optional ingest runs beside them until the clients stop."""
    stop = threading.Event()
    result = LoadResult(seconds=seconds)
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            q = feed.next()
            t0 = time.perf_counter()
            try:
                ok, err = send(q)
            except Exception as exc:  # noqa: BLE001 - a failed request is a counted error
                ok, err = False, f"{type(exc).__name__}: {exc}"
            took = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    result.latencies.append(took)
                else:
                    result.errors.append(err)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    writer = None
    if ingest is not None:
        writer = threading.Thread(target=ingest, args=(stop, result), daemon=True)
        writer.start()
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    result.seconds = time.perf_counter() - started
    if writer is not None:
        writer.join(120)
    return result


def _http_sender(url: str) -> Callable[[str], tuple[bool, str]]:
    local = threading.local()

    def send(q: str) -> tuple[bool, str]:
        client = getattr(local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {READER}"}, timeout=60
            )
            local.client = client
        resp = client.post("/api/v1/query", json={"query": q})
        if resp.status_code != 200:
            return False, f"{resp.status_code} {resp.text[:200]}"
        return True, ""

    return send


def _corpus_files() -> Iterator[tuple[str, Path]]:
    for layer in ("kern", "erweitert"):
        for path in sorted((CORPUS / layer).rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix in SUPPORTED:
                yield layer, path


def _uploader(url: str) -> Callable[[threading.Event, LoadResult], None]:
    """Uploads the sample corpus files back to back, new names every round: an ingest that
    runs for as long as the clients do."""

    def run(stop: threading.Event, result: LoadResult) -> None:
        files = list(_corpus_files())
        headers = {"Authorization": f"Bearer {EDITOR}"}
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            n = 0
            while not stop.is_set():
                layer, path = files[n % len(files)]
                name = f"last-{n // len(files)}-{path.name}"
                n += 1
                resp = client.post(
                    "/api/v1/documents",
                    files={"file": (name, path.read_bytes(), "application/octet-stream")},
                    data={"layer": layer},
                )
                if resp.status_code == 200:
                    result.uploads += 1
                    result.chunks_written += int(resp.json()["report"]["chunks_written"])
                else:
                    result.upload_errors.append(f"{name}: {resp.status_code} {resp.text[:200]}")

    return run


# ------------------------------------------------------------------------------- run


def measure_corpus(
    label: str, data_dir: Path, tmp: Path, queries: list[str], warm: list[str]
) -> tuple[dict[str, Any], Server]:
    """The server over HTTP and the Python API, interleaved; returns the figures and the
    running server (the caller runs the load phase on it or stops it)."""
    load_before = load1()
    tokens = write_tokens(tmp / f"{label}-tokens.toml")
    server = start_server(data_dir, tokens, tmp / f"{label}-serve.log")
    timed = time_pair(server.url, data_dir, queries, warm)
    row = {
        "label": label,
        "chunks": _count(server.url),
        "queries": len(queries),
        "inproc": timed.pop("inproc"),
        "http": timed,
        "rss_warm": server.rss_mb(),
        "load1": (load_before, load1()),
    }
    return row, server


def _count(url: str) -> int:
    headers = {"Authorization": f"Bearer {EDITOR}"}
    layers = httpx.get(f"{url}/api/v1/layers", headers=headers, timeout=30).json()["layers"]
    return sum(int(x["count"]) for x in layers)


def run(args: argparse.Namespace) -> dict[str, Any]:
    n_q = 40 if args.quick else args.queries
    pool = scale_corpus.load_queries(5000)
    warm, timed, load_pool = pool[:10], pool[10 : 10 + n_q], pool[10 + n_q :]
    out: dict[str, Any] = {"rows": [], "machine": machine_line()}
    with tempfile.TemporaryDirectory(prefix="osp-http-") as tmp_name:
        tmp = Path(tmp_name)
        sample = tmp / "sample"
        t0 = time.perf_counter()
        build_sample(sample)
        out["sample_build_s"] = time.perf_counter() - t0
        row, server = measure_corpus("sample", sample, tmp, timed, warm)
        out["rows"].append(row)
        try:
            seconds = 8.0 if args.quick else args.seconds
            out["load1_load_start"] = load1()
            load = run_load(
                _http_sender(server.url),
                QueryFeed(load_pool),
                clients=args.clients,
                seconds=seconds,
                ingest=None if args.no_ingest else _uploader(server.url),
            )
            out["load1_load_end"] = load1()
            time.sleep(3)  # settle: the steady RSS after the load
            out["load"] = load
            out["rss_after_load"] = server.rss_mb()
            out["chunks_after_load"] = _count(server.url)
        finally:
            server.stop()
        if not args.quick and not args.skip_100k:
            big = build_100k()
            row, server = measure_corpus("100k", big, tmp, timed, warm)
            server.stop()
            out["rows"].append(row)
    return out


def report(out: dict[str, Any]) -> str:
    lines = [
        out["machine"],
        "",
        "Query latency, one client, clearance-2 token (filtered), caches off, unique queries; "
        "in-process = `KnowledgeBase.query` in the bench process on the same data dir (same "
        "principal), each query alternately first over HTTP or in-process; HTTP client = "
        "wall time of the request over a keep-alive connection; server "
        "= the app's own time (`Server-Timing`: request in to response start); engine = the "
        "query's `timings_ms.total`. 1-min load average before / after each corpus.",
        "",
        "| corpus | chunks | queries | in-process p50 / p95 ms | HTTP client p50 / p95 ms "
        "| server p50 / p95 ms | engine p50 ms | HTTP / in-process (p50) | target p50 | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        base, http = r["inproc"], r["http"]
        ratio = statistics.median(http["client"]) / statistics.median(base)
        lines.append(
            f"| {r['label']} | {r['chunks']:,} | {r['queries']} "
            f"| {pct(base, 50):.2f} / {pct(base, 95):.2f} "
            f"| {pct(http['client'], 50):.2f} / {pct(http['client'], 95):.2f} "
            f"| {pct(http['server'], 50):.2f} / {pct(http['server'], 95):.2f} "
            f"| {pct(http['engine'], 50):.2f} | {ratio:.2f}× "
            f"| ≤ {TARGET_P50[r['label']]:g} ms | {r['load1'][0]:.2f} / {r['load1'][1]:.2f} |"
        )
    load: LoadResult | None = out.get("load")
    if load is not None:
        lines += [
            "",
            f"Load (sample corpus): {load.seconds:.0f} s, clients as given, each sending unique "
            "queries back to back; beside them one uploader sends the sample corpus files "
            "through `POST /api/v1/documents` back to back (new names each round).",
            "",
            "| clients | seconds | queries | q/s (target ≥ 50) | p50 / p95 ms | query errors "
            "| uploads (errors) | chunks written | load avg start / end |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {out.get('clients', 8)} | {load.seconds:.0f} | {len(load.latencies):,} "
            f"| {load.qps:.1f} | {pct(load.latencies, 50):.1f} / {pct(load.latencies, 95):.1f} "
            f"| {len(load.errors)} | {load.uploads} ({len(load.upload_errors)}) "
            f"| {load.chunks_written:,} "
            f"| {out['load1_load_start']:.2f} / {out['load1_load_end']:.2f} |",
        ]
    rss = out.get("rss_after_load")
    if rss:
        warm = out["rows"][0]["rss_warm"]
        lines += [
            "",
            f"Server RSS (sample corpus, model loaded): {warm['VmRSS']:.0f} MB after warm-up, "
            f"{rss['VmRSS']:.0f} MB steady after the load (peak {rss['VmHWM']:.0f} MB; "
            f"{out['chunks_after_load']:,} chunks by then); target ≤ {TARGET_RSS:g} MB.",
        ]
    if rss:
        lines.append(
            "The growth after warm-up comes with the uploads (the ONNX arena at document batch "
            "sizes, glibc's per-thread malloc arenas under 8 concurrent requests, Chroma's "
            "write path); a server that only answers queries stays near its warm-up RSS. "
            "`osp serve` already limits glibc to two malloc arenas (server/memory.py); what "
            "remains is the write path's working memory."
        )
    for r in out["rows"][1:]:
        lines.append(
            f"Server RSS at {r['label']}: {r['rss_warm']['VmRSS']:.0f} MB after the timed "
            f"queries (peak {r['rss_warm']['VmHWM']:.0f} MB)."
        )
    lines += [
        "",
        "Reproduce on a quiet machine: `.venv/bin/python bench/http_load.py` (the first run "
        "writes the 100k store once under `~/.cache/osprag-bench/http-100k-v1`); "
        "`--quick` is a smoke run (sample only, 40 queries, 8 s of load), not for figures.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; writes no section")
    parser.add_argument("--queries", type=int, default=300, help="timed queries per corpus")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-100k", action="store_true")
    parser.add_argument("--no-ingest", action="store_true", help="load without the uploader")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    parser.add_argument("--spin", action="store_true", help="ONNX threads spin (use --no-write)")
    args = parser.parse_args(argv)
    SPIN["on"] = args.spin
    out = run(args)
    out["clients"] = args.clients
    text = report(out)
    print(text)
    load: LoadResult | None = out.get("load")
    if load is not None and (load.errors or load.upload_errors):
        print("errors:", *(load.errors + load.upload_errors)[:10], sep="\n  ")
    if not args.quick and not args.no_write and not args.spin:
        write_section("http_load", "HTTP API: latency, load and memory (bench/http_load.py)", text)
    return out


if __name__ == "__main__":
    main()
