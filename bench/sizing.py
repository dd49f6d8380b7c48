"""Sizing: disk and RAM per 10k chunks, for the table in docs/deployment.md.

Chunks: real German/English text at the chunker's size (128 MiniLM tokens, overlap 0): the
small word windows of ``scale_corpus.py`` joined in order until a chunk holds 128 tokens, pass
after pass with another start, so every chunk differs. Vector: the normalised mean of the
windows' real MiniLM vectors (cached by ``scale_corpus.py``; sizes do not depend on the values).
Metadata: the keys a real ingest writes (source, title, doc_type, version, status, tags, page,
section, access level, chunk and revision keys; the osp_ keys of an ingest are reserved for
the ingest path, so they are written under other names of the same length); 30 % kern,
70 % erweitert.

Per size, each step in a fresh process:
- build: write the chunks through ``KnowledgeBase.add`` (the real write path: Chroma, the
  lexical index, and the embedding cache as an ingest fills it), close; disk = bytes of the
  data dir (embedded) or of Chroma's path plus osprag's own files (server), per component;
- serve: open the store as ``osp serve`` does, load the ONNX model, answer unique real
  questions (hybrid, clearance 2 and 4 alternating), report steady RSS (VmRSS after the
  queries) and peak RSS (VmHWM) of that process, and in server mode the ``chroma run`` RSS.
Per-10k figures are the growth between the two largest sizes scaled to 10k; the fixed cost
(Python, chromadb, the model, index structures) is the smaller size minus its share of that
growth. An empty store is shown for reference.

    .venv/bin/python bench/sizing.py                         # 10k and 50k, embedded and server
    .venv/bin/python bench/sizing.py --sizes 2000,4000 --queries 20 --no-write  # a quick check
    .venv/bin/python bench/sizing.py --render bench/.cache/sizing.json   # docs from the last run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale_corpus  # noqa: E402
from common import machine_line  # noqa: E402
from ops import chroma_server  # noqa: E402

CHUNK_TOKENS = 128  # osprag.ingest.chunking.DEFAULT_MAX_TOKENS
DOC_TYPES = ("VA", "AA", "Formblatt", "Prüfplan", "Lenkungsplan", "Richtlinie")
STATUSES = ("FREIGEGEBEN", "FREIGEGEBEN", "FREIGEGEBEN", "ENTWURF")
SECTIONS = ("Zweck", "Geltungsbereich", "Ablauf > Prüfung", "Verantwortung", "Dokumentation")


def build_chunks(n: int) -> tuple[list[dict[str, Any]], np.ndarray[Any, Any]]:
    """``n`` chunks of ~128 tokens with metadata, and their float32 unit vectors."""
    from tokenizers import Tokenizer

    from osprag.embedding import resolve_model_path

    tok = Tokenizer.from_file(str(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    windows, wvecs = scale_corpus.load(scale_corpus.MAX, embed=False, log=False)
    lengths = [len(e.ids) - 2 for e in tok.encode_batch([w["text"] for w in windows])]
    chunks: list[dict[str, Any]] = []
    vectors = np.zeros((n, wvecs.shape[1]), np.float32)
    start, rnd = 0, 0
    seen: set[str] = set()
    noise = np.random.default_rng(0)
    while len(chunks) < n:
        end, tokens = start, 0
        while end < len(windows) and tokens < CHUNK_TOKENS - 20:
            tokens += lengths[end]
            end += 1
        if end >= len(windows):  # next pass: another grouping of the same windows
            rnd += 1
            if rnd > 40:
                raise RuntimeError(f"only {len(chunks)} chunks from the windows")
            start = rnd
            continue
        text = " ".join(w["text"] for w in windows[start:end])
        if rnd:  # a later pass reads like a revision of the same document
            text = f"{SECTIONS[rnd % 5]} (Rev. {rnd + 1}): {text}"
        if text in seen:
            start = end
            continue
        seen.add(text)
        i = len(chunks)
        vec = np.asarray(wvecs[start:end], np.float32).mean(axis=0)
        if rnd:  # near, not equal, to the first pass's vector (~0.95 cosine)
            vec = vec / np.linalg.norm(vec) + noise.normal(scale=0.3 / 19.6, size=vec.shape)
        vectors[i] = vec / np.linalg.norm(vec)
        first = windows[start]
        doc = int(hashlib.blake2b(first["doc"].encode(), digest_size=4).hexdigest(), 16) % 10_000
        layer = first["layer"]
        chunks.append(
            {
                "id": f"s{rnd:02d}-{start:06d}",
                "layer": layer,
                "text": text,
                "meta": {
                    "source": f"{layer}/QM/{DOC_TYPES[doc % 6]}-{doc:04d}_{first['doc']}.pdf",
                    "title": f"{DOC_TYPES[doc % 6]} {doc:04d}",
                    "doc_type": DOC_TYPES[doc % 6],
                    "version": str(1 + doc % 5),
                    "status": STATUSES[doc % 4],
                    "tags": "QM,IATF" if doc % 3 else "QM",
                    "access_level": int(first["access_level"]),
                    "page": 1 + (start // 7) % 40,
                    "section": SECTIONS[start % 5],
                    "chunk_index": start % 97,
                    "char_start": 900 * (start % 97),
                    "char_end": 900 * (start % 97) + 880,
                    "doc_key": f"{first['doc']}-{rnd}",
                    "rev": hashlib.sha256(f"{first['doc']}:{rnd}".encode()).hexdigest()[:16],
                    "root": "r0",
                },
            }
        )
        start = end
    return chunks, vectors


class _Lookup:
    """The real model's identity and query path; documents' vectors come from the table."""

    def __init__(self, inner: Any, table: dict[str, np.ndarray[Any, Any]]) -> None:
        self.inner, self.table = inner, table

    @property
    def identity(self) -> Any:
        return self.inner.identity

    def embed_documents(self, texts: Any) -> np.ndarray[Any, Any]:
        return np.stack([self.table[t] for t in texts])

    def embed_queries(self, texts: Any) -> Any:
        return self.inner.embed_queries(texts)


def _settings(mode: str, home: Path, url: str | None) -> Any:
    from osprag import Settings

    if mode == "embedded":
        return Settings(data_dir=home / "data", embedding_backend="onnx")
    return Settings(
        data_dir=home / "data", cache_dir=home / "cache", chroma_url=url, embedding_backend="onnx"
    )


def worker_build(mode: str, n: int, home: Path, url: str | None) -> dict[str, Any]:
    from osprag import KnowledgeBase
    from osprag.embedding import create_embedder

    settings = _settings(mode, home, url)
    chunks, vectors = build_chunks(n) if n else ([], np.zeros((0, 384), np.float32))
    table = {c["text"]: vectors[i] for i, c in enumerate(chunks)}
    embedder = _Lookup(create_embedder(settings), table)
    t0 = time.perf_counter()
    with KnowledgeBase.open(settings, embedder=embedder) as kb:  # type: ignore[arg-type]
        for layer in ("kern", "erweitert"):
            part = [c for c in chunks if c["layer"] == layer]
            for s in range(0, len(part), 2000):
                batch = part[s : s + 2000]
                kb.add(
                    layer,
                    [c["text"] for c in batch],
                    ids=[c["id"] for c in batch],
                    metadatas=[c["meta"] for c in batch],
                )
        if not chunks:  # create the layers, as a fresh deployment has them
            for layer in ("kern", "erweitert"):
                kb.count(layer)
        counts = {layer: kb.count(layer) for layer in ("kern", "erweitert")}
    chars = statistics.mean(len(c["text"]) for c in chunks) if chunks else 0.0
    return {"seconds": time.perf_counter() - t0, "counts": counts, "mean_chars": chars}


def _status(field: str, pid: str | int = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_serve(mode: str, home: Path, url: str | None, queries: int) -> dict[str, Any]:
    from osprag import KnowledgeBase, Principal

    settings = _settings(mode, home, url)
    kb = KnowledgeBase.open(settings)
    opened = _status("VmRSS")
    kb.embedder.embed_queries(["Aufwärmen"])
    loaded = _status("VmRSS")
    principals = (Principal("reader", clearance=2), Principal("admin", clearance=4))
    times = []
    for i, q in enumerate(scale_corpus.load_queries(queries)):
        t0 = time.perf_counter()
        kb.query(q, n_results=5, principal=principals[i % 2], use_cache=False)
        times.append((time.perf_counter() - t0) * 1000)
    import gc

    gc.collect()
    out = {
        "rss_open_mb": opened,
        "rss_model_mb": loaded,
        "rss_steady_mb": _status("VmRSS"),
        "rss_peak_mb": _status("VmHWM"),
        "query_p50_ms": statistics.median(times),
        "queries": len(times),
    }
    kb.close()
    return out


def _disk(mode: str, home: Path) -> dict[str, int]:
    """Bytes per component: Chroma's files (and osprag's small ones), the lexical index, the
    embedding cache (embedded: all in the data dir; server: Chroma's path + osprag's dirs)."""
    dirs = [home / "data"]
    if mode == "server":
        dirs += [home / "cache", home / "chroma"]
    files = [f for d in dirs if d.exists() for f in d.rglob("*") if f.is_file()]
    lexical = sum(f.stat().st_size for f in files if f.name.startswith("lexical"))
    emb = sum(f.stat().st_size for f in files if f.name.startswith("embeddings.sqlite"))
    total = sum(f.stat().st_size for f in files if f.name != "server.log")
    return {"chroma": total - lexical - emb, "lexical": lexical, "embedding_cache": emb}


def _child(args: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(extra_env or {}))
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# The serve step per variant, on the same store: the default settings, and without the
# in-memory copies of big layers (the setting that trades query latency for RAM).
VARIANTS = {"default": {}, "mirror off": {"OSP_MIRROR_MAX_CHUNKS": "0"}}


def measure(mode: str, n: int, root: Path, queries: int) -> list[dict[str, Any]]:
    home = root / f"{mode}-{n}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    common = ["--mode", mode, "--home", str(home)]
    serve_args = ["--worker", "serve", "--queries", str(queries)]
    out = []
    if mode == "embedded":
        build = _child(["--worker", "build", "--n", str(n), *common])
        disk = _disk(mode, home)
        for variant, env in VARIANTS.items():
            serve = _child([*serve_args, *common], env)
            out.append({"mode": mode, "variant": variant, "n": n, "build": build, "serve": serve})
    else:
        with chroma_server(home) as (url, pid):
            common += ["--url", url]
            build = _child(["--worker", "build", "--n", str(n), *common])
            for variant, env in VARIANTS.items():
                serve = _child([*serve_args, *common], env)
                serve["chroma_rss_mb"] = _status("VmRSS", pid)
                serve["chroma_peak_mb"] = _status("VmHWM", pid)
                out.append(
                    {"mode": mode, "variant": variant, "n": n, "build": build, "serve": serve}
                )
        disk = _disk(mode, home)
    for r in out:
        r["disk"] = disk
    return out


def _label(r: dict[str, Any]) -> str:
    variant = r.get("variant", "default")
    return r["mode"] if variant == "default" else f"{r['mode']}, {variant}"


def per_10k(small: dict[str, Any], big: dict[str, Any]) -> dict[str, float]:
    """Growth per 10k chunks from ``small`` to ``big``; ``*_fixed`` = ``small`` minus its share.

    The sizing table takes the empty store as ``small``: everything a filled store costs above
    an empty one is charged to its chunks. That never underestimates up to the largest size
    measured, where the step between two filled sizes can: below OSP_EXACT_SEARCH_BELOW (10k
    per layer) layers are searched exactly from copies in memory whatever the mirror setting,
    above it Chroma's HNSW index is loaded instead, so the regimes differ."""
    scale = 10_000 / (big["n"] - small["n"])
    disk = {k: (big["disk"][k] - small["disk"][k]) * scale / 1e6 for k in big["disk"]}
    out = {f"disk_{k}_mb": v for k, v in disk.items()}
    out["disk_mb"] = sum(disk.values())
    for key in ("rss_steady_mb", "rss_peak_mb", "chroma_rss_mb"):
        if key in big["serve"]:
            out[key] = (big["serve"][key] - small["serve"][key]) * scale
            out[f"{key}_fixed"] = small["serve"][key] - out[key] * small["n"] / 10_000
    return out


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        machine_line(),
        "",
        "| mode | chunks | chars/chunk | disk MB (chroma / lexical / emb. cache) | "
        "osprag RSS MB steady / peak | chroma server RSS MB | query p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d, s = r["disk"], r["serve"]
        total = sum(d.values()) / 1e6
        chroma = f"{s['chroma_rss_mb']:.0f}" if "chroma_rss_mb" in s else "in process"
        lines.append(
            f"| {_label(r)} | {r['n']:,} | {r['build']['mean_chars']:.0f} | {total:.1f} "
            f"({d['chroma'] / 1e6:.1f} / {d['lexical'] / 1e6:.1f} / "
            f"{d['embedding_cache'] / 1e6:.1f}) | {s['rss_steady_mb']:.0f} / "
            f"{s['rss_peak_mb']:.0f} | {chroma} | {s['query_p50_ms']:.1f} |"
        )
    lines.append("")
    for mode in dict.fromkeys(_label(r) for r in results):
        rows = sorted((r for r in results if _label(r) == mode and r["n"]), key=lambda r: r["n"])
        if len(rows) < 2:
            continue
        slope = per_10k(rows[-2], rows[-1])
        parts = ", ".join(f"{k} {v:.1f}" for k, v in slope.items())
        lines.append(f"{mode}, per 10k chunks ({rows[-1]['n']:,} vs {rows[-2]['n']:,}): {parts}")
    return "\n".join(lines)


MIRROR_CAP = 200_000  # OSP_MIRROR_MAX_CHUNKS default
HOST_GB = 16.0
OS_GB = 2.0  # kernel, sshd, page cache for the stores' files: an assumption, not measured
LLM = "Ollama 7B/8B at q4 (e.g. llama3.1:8b q4_K_M)"
LLM_GB = 4.5  # the model's published download size; its KV cache grows with the context on top


def capacity(results: list[dict[str, Any]]) -> str:
    """The sizing table of docs/deployment.md: per 10k chunks, fixed cost, what fits."""
    rows = []
    budget_mb = (HOST_GB - OS_GB - LLM_GB) * 1000
    for mode in dict.fromkeys(_label(r) for r in results):
        rows_of = sorted((r for r in results if _label(r) == mode), key=lambda r: r["n"])
        if len(rows_of) < 2 or rows_of[0]["n"] != 0:
            continue
        g = per_10k(rows_of[0], rows_of[-1])
        ram = g["rss_steady_mb"] + g.get("chroma_rss_mb", 0.0)
        fixed = g["rss_steady_mb_fixed"] + g.get("chroma_rss_mb_fixed", 0.0)
        fits = max(0.0, (budget_mb - fixed) / ram) * 10_000 if ram > 0 else float("inf")
        disk_gb = min(fits, MIRROR_CAP) / 10_000 * g["disk_mb"] / 1000
        if "mirror off" not in mode and fits > MIRROR_CAP:
            at_cap = (fixed + ram * MIRROR_CAP / 10_000) / 1000
            fit = (
                f"> {MIRROR_CAP // 1000}k (at {MIRROR_CAP // 1000}k: {at_cap:.1f} GB; past "
                "the mirror's cap the mirror-off row applies)"
            )
        else:
            fit = f"{fits / 1000:,.0f}k"
            disk_gb = fits / 10_000 * g["disk_mb"] / 1000
        where = "osprag process" if mode.startswith("embedded") else "osprag + chroma server"
        rows.append(
            f"| {mode} ({where}) | {ram:.0f} | {fixed:.0f} | {g['disk_mb']:.0f} "
            f"({g['disk_chroma_mb']:.0f} / {g['disk_lexical_mb']:.0f} / "
            f"{g['disk_embedding_cache_mb']:.0f}) | {fit}, disk {disk_gb:.0f} GB |"
        )
    sizes = sorted({r["n"] for r in results if r["n"]})
    chars = [r["build"]["mean_chars"] for r in results if r["n"]]
    listed = ", ".join(f"{n:,}" for n in sizes)
    return "\n".join(
        [
            f"Measured by `bench/sizing.py` ({machine_line()[9:].rstrip('.')}): {listed} "
            f"chunks of real text at the chunker's 128 tokens (~{statistics.mean(chars):.0f} "
            "characters), 15 metadata keys, written through `KnowledgeBase.add`; then a fresh "
            "process opens the store, loads the ONNX model and answers 100 unique questions "
            "(hybrid, clearance 2 and 4), with the default settings and again with "
            "`OSP_MIRROR_MAX_CHUNKS=0` (no in-memory copies of big layers: less RAM, slower "
            "filtered queries). RAM = steady RSS after the queries; fixed = an empty store's "
            "process (Python, chromadb, the model); per 10k = the growth from the empty store "
            f"to {sizes[-1]:,} chunks, scaled to 10k (it includes one-off costs such as "
            "loading the index, so it overestimates a little at larger sizes). Disk = Chroma's "
            "files / lexical index / embedding cache. The query times are indicative only "
            "(measured while other jobs loaded the machine).",
            "",
            f"A {HOST_GB:.0f} GB host running {LLM} beside osprag: {LLM_GB} GB for the LLM (its "
            "published size, not measured here; add its KV cache for long contexts), "
            f"{OS_GB:.0f} GB for the OS (assumed), "
            f"{HOST_GB - OS_GB - LLM_GB:.1f} GB left for osprag.",
            "",
            "| storage | RAM MB per 10k chunks | fixed RAM MB | disk MB per 10k (chroma / "
            "lexical / emb. cache) | chunks that fit in the rest |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Each extra `osp serve` worker holds its own model and in-memory copies: add its "
            "fixed cost and the osprag share of the per-10k figure per worker. Figures beyond "
            f"the measured {sizes[-1]:,} chunks are linear extrapolations.",
        ]
    )


def write_docs(results: list[dict[str, Any]]) -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
    text = doc.read_text(encoding="utf-8")
    block = f"<!-- sizing -->\n{capacity(results)}\n\n{report(results)}\n<!-- /sizing -->"
    pattern = re.compile(r"<!-- sizing -->.*?<!-- /sizing -->", re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{doc} has no <!-- sizing --> block")
    doc.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--modes", default="embedded,server")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", type=Path, help="rewrite the docs from a saved results file")
    parser.add_argument("--worker", choices=("build", "serve"))
    parser.add_argument("--mode", default="embedded")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=0)
    args = parser.parse_args()
    if args.worker == "build":
        print(json.dumps(worker_build(args.mode, args.n, args.home, args.url)))
        return
    if args.worker == "serve":
        print(json.dumps(worker_serve(args.mode, args.home, args.url, args.queries)))
        return
    if args.render:
        results = json.loads(args.render.read_text(encoding="utf-8"))
    else:
        sizes = [0, *(int(s) for s in args.sizes.split(","))]
        results = []
        with tempfile.TemporaryDirectory(prefix="osp-sizing-") as tmp:
            for mode in args.modes.split(","):
                for n in sizes:
                    for r in measure(mode, n, Path(tmp), args.queries):
                        print(json.dumps(r), flush=True)
                        results.append(r)
        out = Path(__file__).parent / ".cache" / "sizing.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"results in {out}")
    print(capacity(results))
    print(report(results))
    if not args.no_write:
        write_docs(results)


if __name__ == "__main__":
    main()
