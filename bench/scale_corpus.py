"""A large corpus of real German/English text with real embeddings, for scale benchmarks.

Text: the shared eval corpora (GermanQuAD articles, XQuAD-de paragraphs, qm-demo-automotive)
cut into small word windows, pass after pass with another window length and offset, so that
100k chunks are real text, every one different, with the near-duplicates that re-chunked and
revised documents bring. Metadata: a layer (30 % kern) and an access level with a realistic
mix (L1 35 %, L2 35 %, L3 20 %, L4 10 %), from a hash of the chunk, so reruns agree.

Vectors: embedded once with osprag's ONNX backend and kept under ``~/.cache/osprag-bench``
(never in the repository), in blocks, so an interrupted run resumes and reruns only read.

    nice -n 10 .venv/bin/python bench/scale_corpus.py --n 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import EVAL  # noqa: E402

CACHE = Path.home() / ".cache" / "osprag-bench" / "scale"
SOURCES = ("germanquad-articles-dev", "xquad-de", "qm-demo-automotive")
LEVEL_MIX = ((1, 0.35), (2, 0.35), (3, 0.20), (4, 0.10))
KERN_SHARE = 0.3
BLOCK = 5000
VERSION = 1


def _documents() -> list[tuple[str, list[str]]]:
    docs = []
    for source in SOURCES:
        with (EVAL / source / "corpus.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                words = f"{row.get('title', '')}. {row['text']}".split()
                docs.append((f"{source}/{row['_id']}", words))
    return docs


def _unit(key: str, salt: str) -> float:
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _level(key: str) -> int:
    u, acc = _unit(key, "level"), 0.0
    for level, share in LEVEL_MIX:
        acc += share
        if u < acc:
            return level
    return 4


def build_texts(n: int) -> list[dict[str, Any]]:
    """``n`` chunks: dicts with id, text, layer, access_level, doc."""
    docs = _documents()
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    r = 0
    while len(out) < n:
        length = 16 + (r * 7) % 25
        offset = (r * 5) % length
        for doc_id, words in docs:
            for start in range(offset if len(words) > length else 0, len(words), length):
                text = " ".join(words[start : start + length])
                if len(text) < 20 or text in seen:
                    continue
                seen.add(text)
                cid = f"c{len(out):06d}"
                out.append(
                    {
                        "id": cid,
                        "text": text,
                        "doc": doc_id,
                        "layer": "kern" if _unit(cid, "layer") < KERN_SHARE else "erweitert",
                        "access_level": _level(cid),
                    }
                )
                if len(out) == n:
                    return out
        r += 1
        if r > 200:
            raise RuntimeError(f"only {len(out)} distinct chunks from the sources")
    return out


MAX = 100_000


def _folder() -> Path:
    return CACHE / f"v{VERSION}-n{MAX}"


def stand_in(n: int) -> tuple[list[dict[str, Any]], Any]:
    """TIMING ONLY, while the real vectors are not embedded yet: the embedded blocks, tiled
    with noise (each copy ~0.95 cosine from its original, re-normalised) up to ``n``."""
    folder = _folder()
    chunks = [json.loads(line) for line in (folder / "chunks.jsonl").open(encoding="utf-8")]
    blocks = []
    b = 0
    while (folder / f"block{b:04d}.npy").exists():
        blocks.append(np.load(folder / f"block{b:04d}.npy"))
        b += 1
    real = np.concatenate(blocks)
    rng = np.random.default_rng(0)
    reps = -(-n // len(real))
    tiles = [real]
    for _ in range(reps - 1):
        noise = rng.normal(scale=0.3 / np.sqrt(real.shape[1]), size=real.shape)
        copy = real + noise.astype(np.float32)
        tiles.append(copy / np.linalg.norm(copy, axis=1, keepdims=True))
    return chunks[:n], np.concatenate(tiles)[:n].astype(np.float32)


def load(n: int, *, embed: bool = True, log: bool = True) -> tuple[list[dict[str, Any]], Any]:
    """The first ``n`` chunks and their float32 unit vectors; embeds what the cache lacks.

    Every size is a prefix of one 100k build, so 10k reuses the first blocks of 100k.
    """
    if not 0 < n <= MAX:
        raise ValueError(f"n must be in 1..{MAX}")
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    texts_file = folder / "chunks.jsonl"
    if texts_file.exists():
        chunks = [json.loads(line) for line in texts_file.open(encoding="utf-8")]
    else:
        chunks = build_texts(MAX)
        tmp = texts_file.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for c in chunks:
                fh.write(json.dumps(c, ensure_ascii=False) + "\n")
        tmp.replace(texts_file)
    full = folder / "vectors.npy"
    if full.exists():
        return chunks[:n], np.load(full, mmap_mode="r")[:n]
    embedder = None
    blocks = []
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, n, BLOCK)):
        path = folder / f"block{b:04d}.npy"
        if not path.exists():
            if not embed:
                raise FileNotFoundError(f"{path} missing: run bench/scale_corpus.py first")
            embedder = embedder or _embedder()
            vecs = embedder.embed_documents([c["text"] for c in chunks[start : start + BLOCK]])
            np.save(path.with_suffix(".tmp.npy"), np.asarray(vecs, np.float32))
            path.with_suffix(".tmp.npy").replace(path)
            if log:
                done = min(MAX, start + BLOCK)
                print(f"embedded {done}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
        blocks.append(np.load(path))
    vectors = np.concatenate(blocks).astype(np.float32)
    if n == MAX:
        np.save(full.with_suffix(".tmp.npy"), vectors)
        full.with_suffix(".tmp.npy").replace(full)
        for b in range(len(blocks)):
            (folder / f"block{b:04d}.npy").unlink()
    return chunks[:n], vectors[:n]


def load_queries(limit: int) -> list[str]:
    """Real questions (GermanQuAD dev, XQuAD-de), unique, interleaved."""
    lists = []
    for source in ("germanquad-dev", "xquad-de"):
        with (EVAL / source / "queries.jsonl").open(encoding="utf-8") as fh:
            lists.append(list(dict.fromkeys(json.loads(line)["text"] for line in fh)))
    out: list[str] = []
    for pair in zip(*lists, strict=False):
        out.extend(pair)
    return list(dict.fromkeys(out))[:limit]


def _embedder() -> Any:
    from osprag import Settings
    from osprag.embedding import create_embedder

    settings = Settings(embedding_backend="onnx", embedding_cache=False)
    return create_embedder(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    chunks, vectors = load(args.n)
    print(f"{len(chunks)} chunks, vectors {vectors.shape} in {_folder()}")


if __name__ == "__main__":
    main()
