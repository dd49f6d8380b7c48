"""Per-layer generations ``(epoch, seq)`` and the write-log cursor, in a small SQLite file.

A generation names one state of a layer as this machine's derived data (lexical index, result
cache, in-memory snapshots) knows it: ``seq`` rises by one with every write this machine makes
or catches up on, ``epoch`` is the store's restore counter. Anything keyed by a generation is
therefore never served after a change, and a restore (new epoch) never repeats a key.

The file sits beside the lexical index (``lexical.gen.sqlite``) and not inside it: a second
connection committing to the lexical file would make that index reload itself from disk.
Processes on one machine that share the lexical index share this file too, so one process's
catch-up is seen by the others with one SQLite read.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from .errors import NotWritable, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (layer TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, ts INTEGER NOT NULL);
"""


def open_shared_sqlite(path: Path | None) -> sqlite3.Connection:
    """An autocommit WAL connection several processes on this machine share (``None``: memory)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        ":memory:" if path is None else str(path),
        timeout=30.0,
        isolation_level=None,
        check_same_thread=False,
    )
    if path is not None:
        enable_wal(db)
        db.execute("PRAGMA synchronous=NORMAL")
    return db


def enable_wal(db: sqlite3.Connection, *, seconds: float = 30.0) -> None:
    """Switch a shared file to WAL. The switch needs a moment of exclusive access, and SQLite
    answers "database is locked" at once, without the busy timeout, when several processes
    open the same new file together (``osp serve --workers N`` starting): so retry."""
    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


class Generation(NamedTuple):
    """(epoch, seq): compare for equality only; seq is local to this machine's derived data."""

    epoch: int
    seq: int


class GenerationStore:
    """Counters and log cursor; thread-safe; every method is one short transaction."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = open_shared_sqlite(path)
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise NotWritable(f"cannot open generation state {path}: {exc}") from None

    # -- generations ----------------------------------------------------------------------

    def epoch(self) -> int:
        return self._state("epoch", 0)

    def generation(self, layer: str) -> Generation:
        with self._lock:
            row = self._db.execute(
                "SELECT (SELECT value FROM state WHERE key = 'epoch'), "
                "(SELECT seq FROM generations WHERE layer = ?)",
                (layer,),
            ).fetchone()
        return Generation(int(row[0] or 0), int(row[1] or 0))

    def generations(self, layers: Sequence[str]) -> tuple[Generation, ...]:
        with self._lock:
            epoch = self._db.execute("SELECT value FROM state WHERE key = 'epoch'").fetchone()
            seqs = dict(self._db.execute("SELECT layer, seq FROM generations").fetchall())
        e = int(epoch[0]) if epoch else 0
        return tuple(Generation(e, int(seqs.get(layer, 0))) for layer in layers)

    def bump(self, layers: Iterable[str]) -> None:
        names = sorted(set(layers))
        if not names:
            return
        self._write(
            lambda db: db.executemany(
                "INSERT INTO generations VALUES (?, 1) "
                "ON CONFLICT(layer) DO UPDATE SET seq = seq + 1",
                [(n,) for n in names],
            )
        )

    def set_epoch(self, epoch: int) -> None:
        self._set_state("epoch", epoch)

    # -- write-log cursor -----------------------------------------------------------------

    def cursor(self) -> int | None:
        value = self._state("cursor", -1)
        return None if value < 0 else value

    def set_cursor(self, ts_us: int) -> None:
        self._set_state("cursor", ts_us)

    def reset_log_state(self, cursor: int) -> None:
        """Forget which entries were applied (after a rebuild from Chroma made them moot)."""

        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM seen")
            db.execute("INSERT OR REPLACE INTO state VALUES ('cursor', ?)", (cursor,))

        self._write(run)

    def unseen(self, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        with self._lock:
            seen: set[str] = set()
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                marks = ",".join("?" * len(part))
                seen.update(
                    r[0]
                    for r in self._db.execute(f"SELECT id FROM seen WHERE id IN ({marks})", part)
                )
        return [i for i in ids if i not in seen]

    def mark_seen(
        self, entries: Sequence[tuple[str, int]], *, prune_before: int | None = None
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", list(entries))
            if prune_before is not None:
                db.execute("DELETE FROM seen WHERE ts < ?", (prune_before,))

        self._write(run)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- internals ------------------------------------------------------------------------

    def _state(self, key: str, default: int) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_state(self, key: str, value: int) -> None:
        self._write(
            lambda db: db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))
        )

    def _write(self, change: Callable[[sqlite3.Connection], object]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    change(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"generation state {self.path}: {exc}") from None
