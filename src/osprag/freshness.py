"""Keeping one process's derived data (lexical index, caches) in step with the shared store.

Every write path calls ``record`` after its data write: the layer's generation rises and, in
server mode, an entry goes into the write log (``writelog.py``). Before answering a query a
process calls ``catch_up``: it reads the store's epoch (one small Chroma call) and, in server
mode, the log's recent entries (one more), applies entries it has not seen to its lexical index
by fetching the named ids from Chroma, and raises the generations of the layers they touched.
A new epoch (a restore) or a process that fell further behind than the log's horizon rebuilds
its lexical index from Chroma instead.

Embedded mode has one writer per data dir and the lexical index and generation file live in
that dir, updated synchronously by the writer: there is no log, only the epoch check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .generations import Generation, GenerationStore
from .writelog import RESET, LogEntry, WriteLog, now_us

if TYPE_CHECKING:
    from .knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)
_PAGE = 1000


class Freshness:
    """Generations, the write log and catch-up for one knowledge base."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        path = kb._lexical_path()
        self.gens = GenerationStore(path.with_name(path.stem + ".gen.sqlite") if path else None)
        self.server = kb.settings.effective_storage == "server"
        self._log: WriteLog | None = None
        self._lock = threading.RLock()
        self._last_check = float("-inf")
        self._compacted_at = float("-inf")
        self.stats: dict[str, int] = {"catch_ups": 0, "applied": 0, "rebuilds": 0, "skipped": 0}
        self._executor: ThreadPoolExecutor | None = None
        self.memo: dict[str, Any] = {}
        """Values derived per generation by other modules (e.g. the tag/validity view)."""

    @property
    def log(self) -> WriteLog:
        if self._log is None:
            self._log = WriteLog(self.kb.store.writelog())
        return self._log

    # -- generations ----------------------------------------------------------------------

    def generation(self, layer: str) -> Generation:
        return self.gens.generation(layer)

    def generations(self, layers: Sequence[str]) -> tuple[Generation, ...]:
        return self.gens.generations(layers)

    # -- writes ---------------------------------------------------------------------------

    def record(self, layer: str, op: str, ids: Sequence[str] = ()) -> None:
        """After a data write: raise the layer's generation and tell the other processes."""
        self.gens.bump([layer])
        if not self.server:
            return
        epoch = self.kb.store.epoch()
        entries = self.log.append(layer, op, list(ids), epoch)
        self.gens.mark_seen([(e.id, e.ts) for e in entries])
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        horizon = self.kb.settings.writelog_horizon
        if time.monotonic() - self._compacted_at < max(60.0, horizon / 10):
            return
        self._compacted_at = time.monotonic()
        removed = self.log.compact(now_us() - int(horizon * 1e6))
        if removed:
            log.info("write log: removed %d entries older than %.0f s", removed, horizon)

    # -- reads ----------------------------------------------------------------------------

    def catch_up(self, *, force: bool = False) -> None:
        """Bring the lexical index and generations up to the store's state (see module doc)."""
        with self._lock:
            interval = self.kb.settings.freshness_interval
            if not force and interval > 0 and time.monotonic() - self._last_check < interval:
                self.stats["skipped"] += 1
                return
            if not force and self._sole_writer() and self.stats["catch_ups"]:
                # holding the data-dir lock: nobody else can write or restore this store
                self.stats["skipped"] += 1
                return
            started = now_us()
            checked = time.monotonic()
            known = self.gens.epoch()
            # server: read the log for the known epoch while the epoch itself is read (two
            # round trips in the time of one); a changed epoch discards the log answer
            pending = self._pool().submit(self._recent, known, started) if self.server else None
            epoch = self.kb.store.epoch()
            recent = pending.result() if pending is not None else None
            if epoch != known:
                log.warning(
                    "store epoch changed (%d → %d, a restore): dropping caches, rebuilding the "
                    "lexical index",
                    self.gens.epoch(),
                    epoch,
                )
                self._rebuild_all(started, epoch)
                self.gens.set_epoch(epoch)
            elif self.server:
                self._read_log(epoch, started, recent)
            self.stats["catch_ups"] += 1
            self._last_check = checked

    def _sole_writer(self) -> bool:
        return not self.server and self.kb._lock is not None

    def _rebuild_all(self, started: int, epoch: int) -> None:
        kb = self.kb
        kb._cols.clear()
        kb._checked.clear()
        kb._lexical_checked.clear()
        kb.store.forget_handles()
        self._log = None
        # Entries already in the log describe writes that completed before the rebuild reads
        # Chroma: the rebuild reflects them, so they count as applied.
        covered: list[LogEntry] = []
        if self.server:
            lookback = int(self.kb.settings.writelog_lookback * 1e6)
            covered = self.log.since(started - lookback, epoch)
        layers = kb.settings.ordered_layers()
        kb.rebuild_lexical(layers)
        self.gens.reset_log_state(started)
        self.gens.mark_seen([(e.id, e.ts) for e in covered])
        self.gens.bump(layers)
        self.stats["rebuilds"] += 1

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="osp-fresh")
        return self._executor

    def _recent(self, epoch: int, started: int) -> list[LogEntry] | None:
        """Log entries to look at, or None when the log cannot be trusted (rebuild instead)."""
        s = self.kb.settings
        lookback = int(s.writelog_lookback * 1e6)
        cursor = self.gens.cursor()
        if cursor is None or started - cursor > int(s.writelog_horizon * 1e6) - lookback:
            if cursor is not None:
                log.warning("write log: last catch-up is older than the log's horizon; rebuilding")
            return None
        return self.log.since(cursor - lookback, epoch)

    def _read_log(self, epoch: int, started: int, entries: list[LogEntry] | None) -> None:
        if entries is None:
            self._rebuild_all(started, epoch)
            return
        lookback = int(self.kb.settings.writelog_lookback * 1e6)
        fresh = set(self.gens.unseen([e.id for e in entries]))
        todo = [e for e in entries if e.id in fresh]
        if todo:
            self.log.load_ids(todo)
            self._apply(todo)
            self.gens.mark_seen([(e.id, e.ts) for e in todo], prune_before=started - 2 * lookback)
            self.stats["applied"] += len(todo)
        self.gens.set_cursor(started)

    def _apply(self, entries: Sequence[LogEntry]) -> None:
        """Bring the named ids of each layer to Chroma's current state (order-independent)."""
        kb = self.kb
        reset: set[str] = set()
        ids: dict[str, set[str]] = {}
        for entry in entries:
            if entry.layer not in kb.settings.layers:
                continue  # a layer another machine configures and this one does not
            if entry.op == RESET:
                reset.add(entry.layer)
            else:
                ids.setdefault(entry.layer, set()).update(entry.ids)
        for layer in reset:
            kb._cols.pop(layer, None)
            kb._checked.discard(layer)
            kb.rebuild_lexical([layer])
        for layer, wanted in ids.items():
            if layer not in reset and wanted:
                self._refresh_ids(layer, sorted(wanted))
        self.gens.bump(reset | set(ids))

    def _refresh_ids(self, layer: str, ids: list[str]) -> None:
        kb = self.kb
        col = kb._collection(layer, create=False, check=False)
        if col is None:
            kb.lexical.clear(layer)
            return
        for start in range(0, len(ids), _PAGE):
            part = ids[start : start + _PAGE]
            res: dict[str, Any] = col.get(ids=part, include=["documents", "metadatas"])
            if res["ids"]:
                kb.lexical.upsert(
                    layer,
                    res["ids"],
                    [d or "" for d in res["documents"]],
                    [m or {} for m in res["metadatas"]],
                )
            gone = sorted(set(part) - set(res["ids"]))
            if gone:
                kb.lexical.delete(layer, gone)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.gens.close()
