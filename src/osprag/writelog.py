"""The write log: how osprag processes that share one Chroma server learn of each other's writes.

Chroma has no change feed and no transactions, so the log is an ordinary collection
(``osp__writelog``) that every write path appends to *after* its data write returned. One entry
names a layer, an operation and up to ``MAX_IDS`` record ids (in the entry's document, as JSON).

Ordering without a shared counter: an entry's id is ``epoch-ts-writer-counter`` where ``ts`` is
the writer's wall clock in microseconds, ``writer`` a random id per process and ``counter`` that
process's own monotonic count, so ids never collide between machines and entries sort by
(ts, writer, counter). That order is *not* needed for correctness: a reader applies an entry by
fetching the named ids' current state from Chroma (present → index it, absent → drop it), which
converges whatever order entries arrive in. What a reader must not do is miss an entry, and an
entry can become visible after one with a later ``ts`` (a slow writer). So a reader re-reads a
``lookback`` window behind its cursor on every catch-up and skips the entries it already applied.

Guarantee: an entry is seen by every reader's next catch-up if the writer's clock is no more than
``lookback`` behind the reader's, minus the append's own latency. Entries older than ``horizon``
are deleted by writers; a reader whose last catch-up is older than ``horizon − lookback`` cannot
trust the log and rebuilds its lexical index from Chroma instead.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Collection

MAX_IDS = 1000
"""ids per entry: keeps one entry's document small (a few tens of kB)."""

RESET = "reset"
"""An entry without ids that says: the layer's collection changed as a whole (drop, reindex)."""


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class LogEntry:
    id: str
    layer: str
    op: str
    epoch: int
    ts: int
    writer: str
    counter: int
    ids: list[str] = field(default_factory=list)


class WriteLog:
    """Append and read entries of one store's log; one instance per knowledge base."""

    def __init__(self, collection: Collection) -> None:
        self.col = collection
        self.writer = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    def append(self, layer: str, op: str, ids: Sequence[str], epoch: int) -> list[LogEntry]:
        """Entries for one write (split by ``MAX_IDS``); returns them so the writer can mark
        them as already applied."""
        parts = [list(ids[i : i + MAX_IDS]) for i in range(0, len(ids), MAX_IDS)] or [[]]
        entries = []
        for part in parts:
            ts, n = now_us(), next(self._counter)
            entries.append(
                LogEntry(
                    id=f"{epoch}-{ts:017d}-{self.writer}-{n:010d}",
                    layer=layer,
                    op=op,
                    epoch=epoch,
                    ts=ts,
                    writer=self.writer,
                    counter=n,
                    ids=part,
                )
            )
        self.col.write(
            "add",
            [e.id for e in entries],
            [[1.0]] * len(entries),
            [json.dumps(e.ids) for e in entries],
            [
                {
                    "layer": e.layer,
                    "op": e.op,
                    "epoch": e.epoch,
                    "ts": e.ts,
                    "writer": e.writer,
                    "counter": e.counter,
                    "n": len(e.ids),
                }
                for e in entries
            ],
        )
        return entries

    def since(self, ts_us: int, epoch: int) -> list[LogEntry]:
        """Entries of ``epoch`` stamped at or after ``ts_us``, without their ids (cheap)."""
        res = self.col.get(
            where={"$and": [{"epoch": epoch}, {"ts": {"$gte": ts_us}}]}, include=["metadatas"]
        )
        out = [
            LogEntry(
                id=rid,
                layer=str(m["layer"]),
                op=str(m["op"]),
                epoch=int(m["epoch"]),
                ts=int(m["ts"]),
                writer=str(m["writer"]),
                counter=int(m["counter"]),
            )
            for rid, m in zip(res["ids"], res["metadatas"], strict=True)
            if m
        ]
        out.sort(key=lambda e: (e.ts, e.writer, e.counter))
        return out

    def load_ids(self, entries: Sequence[LogEntry]) -> None:
        """Fill in the record ids of ``entries`` (one call)."""
        if not entries:
            return
        by_id = {e.id: e for e in entries}
        res = self.col.get(ids=list(by_id), include=["documents"])
        for rid, doc in zip(res["ids"], res["documents"], strict=True):
            by_id[rid].ids = [str(i) for i in json.loads(doc or "[]")]

    def compact(self, before_us: int) -> int:
        """Delete entries stamped before ``before_us``; returns how many."""
        res = self.col.get(where={"ts": {"$lt": before_us}}, include=[])
        if res["ids"]:
            self.col.delete(res["ids"])
        return len(res["ids"])
