"""The query result cache: LRU with a TTL, keyed so that a stale or foreign hit is impossible.

A key holds the normalised query, every parameter that changes the answer, the principal's
effective filter (clearance, validity and tag clauses included) and the generations of the
layers searched. A write to a layer raises its generation (``freshness.py``), in this process
directly or in another one through the write log, so every result that involved the layer is
unreachable from then on; old entries age out of the LRU. The TTL bounds how long a result
lives at all (e.g. a ``valid_from`` that passes midnight changes the effective filter anyway).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from osprag.results import QueryResult


def normalise_query(text: str) -> str:
    """Whitespace and Unicode form do not change an answer; case may (the dense leg)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def copy_result(result: QueryResult) -> QueryResult:
    """A copy the caller may mutate: metadata values are scalars or lists of scalars (Chroma's
    types), so a structured copy is enough; ``deepcopy`` walked every value (a profiled
    hot spot)."""
    return QueryResult(
        query=result.query,
        hits=[
            replace(
                h,
                metadata={k: list(v) if isinstance(v, list) else v for k, v in h.metadata.items()},
                explain=copy.deepcopy(h.explain) if h.explain is not None else None,
            )
            for h in result.hits
        ],
        timings_ms=dict(result.timings_ms),
    )


def make_key(**parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)


class ResultCache:
    """Thread-safe LRU of query results; ``get`` and ``put`` copy, so callers may mutate."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, QueryResult]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.expired = 0
        self.evicted = 0

    def get(self, key: str) -> QueryResult | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None and self._clock() - item[0] > self.ttl:
                del self._items[key]
                self.expired += 1
                item = None
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return copy_result(item[1])

    def put(self, key: str, result: QueryResult) -> None:
        stored = copy_result(result)
        with self._lock:
            self._items[key] = (self._clock(), stored)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
                self.evicted += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "enabled": True,
                "entries": len(self._items),
                "size": self.size,
                "ttl_s": self.ttl,
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hits / lookups if lookups else 0.0,
                "expired": self.expired,
                "evicted": self.evicted,
            }
