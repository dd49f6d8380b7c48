"""One writer per embedded data dir.

Two chromadb processes writing one persistent path silently lose vectors, so a writer takes an
exclusive ``flock`` on ``<data_dir>/osprag.lock`` and records who it is; a second writer gets a
one-line refusal naming the holder instead of a corrupted index. The kernel drops the lock when
the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .errors import StoreLocked

LOCK_NAME = "osprag.lock"


def read_holder(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / LOCK_NAME).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_locked(data_dir: Path) -> bool:
    """True when another process holds the writer lock (probe without keeping it)."""
    path = data_dir / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._locked_error() from None
                time.sleep(0.05)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[
                :200
            ],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def _locked_error(self) -> StoreLocked:
        holder = read_holder(self.path.parent) or {}
        who = f"pid {holder.get('pid', '?')} ({holder.get('command', 'unknown command')})"
        return StoreLocked(
            f"data dir {self.path.parent} is owned by {who} since {holder.get('since', '?')}",
            hint="stop that process, send writes through its API, or use a Chroma server "
            "(OSP_CHROMA_URL) for several writers",
        )

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
