"""Backup, export and import at two store sizes, in both storage modes: wall time, chunks/s,
archive size, and peak RSS of the osprag process separated from the store's own memory.

Each operation runs in a fresh process (so its peak RSS is its own) on a store of N synthetic
chunks (German QM-like text of ~400 characters, random unit 384-d vectors, six metadata keys),
built once per mode and size without the model and cached in bench/.cache/ops/ (each size is
reset to its built state before it is measured, so a rerun measures the same thing).

- embedded: chromadb runs inside the measured process, so its peak includes Chroma's own
  in-memory HNSW index of the collection it reads or writes;
- server: a real ``chroma run`` on 127.0.0.1 (free port, started and stopped here) holds the
  index, so the measured process is osprag plus an HTTP client.

Baselines from the same run, in the same mode: raw paging of the collection with embeddings
(what export must at least read) and raw batched ``add`` of the same records (what import must
at least write). osprag's own increment = its peak minus the baseline's peak at the same size;
the streaming claim is that export and import stay flat from 10k to 100k chunks where the store
does not grow the process (server mode), and that the increment stays flat in both modes.

    .venv/bin/python bench/ops.py            # 10k and 100k, both modes, writes the docs section
    .venv/bin/python bench/ops.py --small    # 1k and 5k, a check that everything runs (no docs)
    .venv/bin/python bench/ops.py --modes server --sizes 2000,10000 --no-write
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "ops"
OPS = ("idle", "backup", "export", "raw_read", "import", "raw_write")
SERVER_OPS = ("idle", "export", "raw_read", "import", "raw_write")  # backup: embedded figures
WORDS = (
    "Crimphöhe Auszugskraft Schliffbild Werkzeugwechsel Losbeginn Prüfmittel Toleranz Kontakt "
    "Leitung Isolation Reklamation Sofortmaßnahme Ursache Wirksamkeit Lieferant Audit Prozess "
    "Freigabe Messsystem Kalibrierung Stichprobe Fehlerbild Lenkungsplan"
).split()

# Runs inside the child: settings from argv (JSON), one operation, then JSON with time and
# peak RSS. "reset" brings a cached store back to its built state and is not measured.
CHILD = r"""
import json, sys, time
from pathlib import Path
from osprag import KnowledgeBase, Settings
op, conf, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
s = Settings(**conf)
t = time.perf_counter()
result = {}
if op == "idle":
    with KnowledgeBase.open(s) as kb:
        result["chunks"] = kb.collection_for("kern").count()
elif op == "reset":
    from osprag.ops import swap
    with KnowledgeBase.open(s) as kb:
        if kb.collection_for("erweitert") is not None:
            kb.drop_layer("erweitert", yes=True)
        if "raw_copy" in kb.store.list_collections():
            kb.store.delete_collection("raw_copy")
        swap.collect_orphans(kb)
        kb.lexical.clear("erweitert")
        result["chunks"] = kb.collection_for("kern").count()
elif op == "backup":
    from osprag.ops.backup import create_backup
    with KnowledgeBase.open(s) as kb:
        info = create_backup(kb)
    result["bytes"] = info.size
elif op == "export":
    from osprag.ops.transfer import export_layer
    with KnowledgeBase.open(s) as kb:
        result["bytes"] = export_layer(kb, "kern", out).bytes
elif op == "import":
    from osprag.ops.transfer import LayerFile
    from osprag.ops.importer import replace_layers
    with KnowledgeBase.open(s) as kb:
        lf = LayerFile(out).scan()
        lf.header.layer = "erweitert"
        _, reports = replace_layers(kb, [lf])
        result["lexical_loaded"] = kb.lexical.loaded
    result["chunks"] = reports[0].chunks
elif op == "raw_read":
    with KnowledgeBase.open(s, read_only=True) as kb:
        col = kb.collection_for("kern")
        off = 0
        while True:
            page = col.get(limit=1000, offset=off, include=["documents", "metadatas", "embeddings"])
            if not page["ids"]:
                break
            off += len(page["ids"])
        result["chunks"] = off
elif op == "raw_write":
    from osprag.ops.transfer import LayerFile
    from osprag.store import IndexConfig
    import numpy as np
    with KnowledgeBase.open(s) as kb:
        lf = LayerFile(out).scan()
        col = kb.store.create_collection("raw_copy", {"x": 1}, IndexConfig("cosine", 16, 200, 100))
        for b in lf.batches():
            if b.kind == "chunk":
                col.write("add", b.ids, np.vstack(b.embeddings).tolist(), b.documents, b.metadatas)
        kb.store.delete_collection("raw_copy")
result["seconds"] = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
result["rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(result))
"""


def _settings(mode: str, home: Path, url: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "data_dir": str(home / "data"),
        "cache_dir": str(home / "cache"),
        "backup_dir": str(home / "backups"),
        "embedding_backend": "torch",
        "embedding_cache": False,
        "storage": mode,
    }
    if url is not None:
        conf["chroma_url"] = url
    return conf


def build(conf: dict[str, Any], n: int) -> None:
    from osprag import KnowledgeBase, Settings
    from osprag.embedding import create_embedder

    s = Settings(**conf)
    identity = create_embedder(s).identity
    rng = random.Random(5)
    vec_rng = np.random.default_rng(5)
    with KnowledgeBase.open(s) as kb:
        col = kb.create_layer_collection("kern", identity)
        kb.store.set_alias("kern", col.name)
        step = 5000
        for start in range(0, n, step):
            m = min(step, n - start)
            vecs = vec_rng.standard_normal((m, identity.dimension)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            texts = [" ".join(rng.choice(WORDS) for _ in range(45)) for _ in range(m)]
            metas = [
                {
                    "access_level": 1 + i % 4,
                    "source": f"DOC_{(start + i) // 40:05d}.pdf",
                    "page": 1 + i % 30,
                    "version": "2.1",
                    "status": "AKTIV",
                    "doc_type": "AA",
                }
                for i in range(m)
            ]
            ids = [f"c{start + i:07d}" for i in range(m)]
            col.write("add", ids, vecs.tolist(), texts, metas)


def child(op: str, conf: dict[str, Any], out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, op, json.dumps(conf), str(out)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=3600,
    )
    if proc.returncode:
        raise RuntimeError(f"{op} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def chroma_server(path: Path) -> Iterator[tuple[str, int]]:
    """A real ``chroma run`` on a free loopback port (as tests/conftest.py starts one)."""
    import httpx

    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = _free_port()
    path.mkdir(parents=True, exist_ok=True)
    with (path / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [chroma, "run", "--path", str(path / "chroma"), "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chroma run did not start; see {path / 'server.log'}")
                time.sleep(0.2)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(mode: str, n: int, home: Path, url: str | None) -> dict[str, Any]:
    """Build (once) or reset the cached store of ``n`` chunks, then run each operation."""
    conf = _settings(mode, home, url)
    marker = home / "built.json"
    shutil.rmtree(home / "backups", ignore_errors=True)
    (home / "backups").mkdir(parents=True)
    if not marker.exists():
        t = time.perf_counter()
        build(conf, n)
        marker.write_text(json.dumps({"chunks": n}))
        print(f"{mode} {n}: built in {time.perf_counter() - t:.1f}s", flush=True)
    reset = child("reset", conf, home / "backups" / "kern.jsonl")
    if reset["chunks"] != n:
        raise RuntimeError(f"cached store {home} has {reset['chunks']} chunks, not {n}: delete it")
    out = home / "backups" / "kern.jsonl"
    r: dict[str, Any] = {"mode": mode, "n": n}
    for op in OPS if mode == "embedded" else SERVER_OPS:
        r[op] = child(op, conf, out)
        print(f"{mode} {n}: {op} {r[op]}", flush=True)
    child("reset", conf, out)
    shutil.rmtree(home / "backups", ignore_errors=True)
    return r


def run(mode: str, n: int) -> dict[str, Any]:
    home = CACHE / f"{mode}-{n}"
    if mode == "embedded":
        return measure(mode, n, home, None)
    with chroma_server(home / "server") as (url, pid):
        r = measure(mode, n, home, url)
        r["server_rss_mb"] = _rss_mb(pid)
    return r


def _increment(r: dict[str, Any], op: str, base: str) -> float:
    return float(r[op]["rss_mb"] - r[base]["rss_mb"])


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        machine_line() + " Synthetic chunks (~400 characters, 384-d, 6 metadata keys); each "
        "operation in a fresh process, peak RSS (VmHWM) of that process. embedded: chromadb "
        "in the process; server: a `chroma run` on 127.0.0.1 holds the collections, the "
        "process is osprag and an HTTP client. Baselines in the same run and mode: raw paging "
        "of the collection with embeddings (read) and raw batched `add` of the same records "
        "(write); the increment is osprag's peak minus the baseline's. Idle: a process that "
        "opens the store and reads a count.",
        "",
        "| mode | chunks | backup s | archive MB | export chunks/s | raw read chunks/s | "
        "import chunks/s | raw write chunks/s | RSS MB idle | RSS MB export / raw read "
        "(increment) | RSS MB import / raw write (increment) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = r["n"]
        backup = r.get("backup")
        lines.append(
            f"| {r['mode']} | {n:,} | "
            + (f"{backup['seconds']:.1f} | {backup['bytes'] / 1e6:.1f} | " if backup else "| | ")
            + f"{n / r['export']['seconds']:,.0f} | {n / r['raw_read']['seconds']:,.0f} | "
            f"{n / r['import']['seconds']:,.0f} | {n / r['raw_write']['seconds']:,.0f} | "
            f"{r['idle']['rss_mb']:.0f} | "
            f"{r['export']['rss_mb']:.0f} / {r['raw_read']['rss_mb']:.0f} "
            f"({_increment(r, 'export', 'raw_read'):+.0f}) | "
            f"{r['import']['rss_mb']:.0f} / {r['raw_write']['rss_mb']:.0f} "
            f"({_increment(r, 'import', 'raw_write'):+.0f}) |"
        )
    lines.append("")
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) < 2:
            continue
        lo, hi = mine[0], mine[-1]

        def ratio(op: str, lo: dict[str, Any] = lo, hi: dict[str, Any] = hi) -> str:
            return f"{hi[op]['rss_mb'] / lo[op]['rss_mb']:.2f}×"

        server = (
            f" The chroma server's own peak: {lo['server_rss_mb']:.0f} MB at {lo['n']:,}, "
            f"{hi['server_rss_mb']:.0f} MB at {hi['n']:,}."
            if "server_rss_mb" in hi
            else " Chroma's in-memory HNSW index of the collection read or written is part of "
            "every embedded figure."
        )
        lines.append(
            f"{mode}: peak RSS {hi['n']:,} vs {lo['n']:,} chunks — export {ratio('export')}, "
            f"import {ratio('import')} (target ≤ 1.2×); raw read {ratio('raw_read')}, raw write "
            f"{ratio('raw_write')}; osprag's increment export "
            f"{_increment(lo, 'export', 'raw_read'):+.0f} → "
            f"{_increment(hi, 'export', 'raw_read'):+.0f} MB, import "
            f"{_increment(lo, 'import', 'raw_write'):+.0f} → "
            f"{_increment(hi, 'import', 'raw_write'):+.0f} MB.{server}"
        )
        lines.append("")
    lines.append(
        "Import includes the validation pass, the atomic flip and the lexical index rebuild "
        "(streamed: pages without embeddings, rows written as they come, no in-memory postings)."
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--modes", default="embedded,server")
    ap.add_argument("--small", action="store_true", help="1k and 5k chunks; implies --no-write")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch the docs")
    args = ap.parse_args()
    sizes = [1000, 5000] if args.small else [int(x) for x in args.sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    started = time.perf_counter()
    rows = [run(mode, n) for mode in modes for n in sizes]
    body = report(rows)
    print(body)
    print(f"total {time.perf_counter() - started:.0f}s", flush=True)
    if not (args.no_write or args.small):
        write_section("ops", "Backup, export and import", body)


if __name__ == "__main__":
    main()
