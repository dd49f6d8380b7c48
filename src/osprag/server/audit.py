"""Audit log: one JSON line per response that carried level-3/4 content (who, when, what).

Appended with O_APPEND under a lock, so lines from threads never interleave; created 0600
because the log itself names confidential documents.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

AUDITED_LEVEL = 3


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, who: str, route: str, items: Iterable[dict[str, Any]]) -> int:
        """Log the level ≥ 3 items among ``items`` (dicts with layer, id, metadata)."""
        rows = []
        for item in items:
            meta = item.get("metadata") or {}
            level = meta.get("access_level", item.get("access_level"))
            if isinstance(level, int) and level >= AUDITED_LEVEL:
                rows.append(
                    {
                        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "who": who,
                        "route": route,
                        "layer": item.get("layer"),
                        "id": item.get("id"),
                        "source": meta.get("source", item.get("source")),
                        "access_level": level,
                    }
                )
        if not rows:
            return 0
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return len(rows)
