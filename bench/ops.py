"""Backup, export and import at two store sizes: wall time, chunks/s, archive size, peak RSS.

Each operation runs in a fresh process (so its peak RSS is its own) on an embedded store of
N synthetic chunks (German QM-like text of ~400 characters, random unit 384-d vectors, six
metadata keys), built once per size without the model. Baselines from the same run: raw
paging of the collection with embeddings (what export must at least read) and raw batched
writes of the same records (what import must at least write). The streaming claim is the
peak-RSS ratio between the two sizes (target ≤ 1.2 at 10k → 100k).

    .venv/bin/python bench/ops.py                      # 10k and 100k (the issue's targets)
    .venv/bin/python bench/ops.py --sizes 2000,10000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "Crimphöhe Auszugskraft Schliffbild Werkzeugwechsel Losbeginn Prüfmittel Toleranz Kontakt "
    "Leitung Isolation Reklamation Sofortmaßnahme Ursache Wirksamkeit Lieferant Audit Prozess "
    "Freigabe Messsystem Kalibrierung Stichprobe Fehlerbild Lenkungsplan"
).split()

# Runs inside the child: settings from argv, one operation, then JSON with time and peak RSS.
CHILD = r"""
import json, sys, time
from pathlib import Path
from osprag import KnowledgeBase, Settings
op, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
s = Settings(data_dir=data, cache_dir=data.parent / "cache", backup_dir=out.parent,
             embedding_backend="torch", embedding_cache=False)
t = time.perf_counter()
result = {}
if op == "backup":
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
    from osprag.embedding import create_embedder
    with KnowledgeBase.open(s) as kb:
        lf = LayerFile(out).scan()
        lf.header.layer = "erweitert"
        _, reports = replace_layers(kb, [lf])
    result["chunks"] = reports[0].chunks
elif op == "raw_read":
    with KnowledgeBase.open(s, read_only=True) as kb:
        col = kb.collection_for("kern")
        n, off = 0, 0
        while True:
            page = col.get(limit=1000, offset=off, include=["documents", "metadatas", "embeddings"])
            if not page["ids"]:
                break
            off += len(page["ids"])
elif op == "raw_write":
    from osprag.ops.transfer import LayerFile
    import numpy as np
    with KnowledgeBase.open(s) as kb:
        lf = LayerFile(out).scan()
        col = kb.store.create_collection("raw_copy", {"x": 1}, __import__(
            "osprag.store", fromlist=["IndexConfig"]).IndexConfig("cosine", 16, 200, 100))
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


def build(data: Path, n: int) -> None:
    from osprag import KnowledgeBase, Settings
    from osprag.embedding import create_embedder

    s = Settings(
        data_dir=data,
        cache_dir=data.parent / "cache",
        embedding_backend="torch",
        embedding_cache=False,
    )
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


def child(op: str, data: Path, out: Path) -> dict[str, Any]:
    env_path = str(ROOT / "src")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, op, str(data), str(out)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=3600,
    )
    if proc.returncode:
        raise RuntimeError(f"{op} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch the docs")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            t = time.perf_counter()
            build(data, n)
            print(f"{n}: built in {time.perf_counter() - t:.1f}s", flush=True)
            out = Path(tmp) / "backups" / "kern.jsonl"
            out.parent.mkdir()
            r: dict[str, Any] = {"n": n}
            for op in ("backup", "export", "raw_read", "import", "raw_write"):
                r[op] = child(op, data, out)
                print(f"{n}: {op} {r[op]}", flush=True)
            rows.append(r)
    lines = [
        machine_line() + " Synthetic chunks (~400 characters, 384-d, 6 metadata keys), "
        "embedded store; each operation in a fresh process. Baselines: raw paging of the "
        "collection with embeddings (read) and raw batched `add` of the same records (write).",
        "",
        "| chunks | backup s | archive MB | export chunks/s | raw read chunks/s | "
        "import chunks/s | raw write chunks/s | RSS MB export / raw read | "
        "RSS MB import / raw write |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = r["n"]
        lines.append(
            f"| {n:,} | {r['backup']['seconds']:.1f} | {r['backup']['bytes'] / 1e6:.1f} | "
            f"{n / r['export']['seconds']:,.0f} | {n / r['raw_read']['seconds']:,.0f} | "
            f"{n / r['import']['seconds']:,.0f} | {n / r['raw_write']['seconds']:,.0f} | "
            f"{r['export']['rss_mb']:.0f} / {r['raw_read']['rss_mb']:.0f} | "
            f"{r['import']['rss_mb']:.0f} / {r['raw_write']['rss_mb']:.0f} |"
        )
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        lines += [
            "",
            f"Peak RSS {hi['n']:,} vs {lo['n']:,} chunks: export "
            f"{hi['export']['rss_mb'] / lo['export']['rss_mb']:.2f}×, import "
            f"{hi['import']['rss_mb'] / lo['import']['rss_mb']:.2f}× (target ≤ 1.2×); raw "
            f"read {hi['raw_read']['rss_mb'] / lo['raw_read']['rss_mb']:.2f}×, raw write "
            f"{hi['raw_write']['rss_mb'] / lo['raw_write']['rss_mb']:.2f}× (Chroma's own "
            "in-memory HNSW index grows with the collection). Import includes validation, the "
            "atomic flip and the lexical index rebuild (whose index is held in memory).",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("ops", "Backup, export and import", body)


if __name__ == "__main__":
    main()
