"""Deterministic crash points for crash-safety tests.

``OSP_FAILPOINTS=after_write:3,before_flip`` makes the process exit hard (``os._exit``, like a
SIGKILL: no cleanup, no finally blocks) the Nth time a named point is reached. Unset, each
check is one dict lookup.
"""

from __future__ import annotations

import os

_counts: dict[str, int] = {}
EXIT_CODE = 86


def _armed() -> dict[str, int]:
    spec = os.environ.get("OSP_FAILPOINTS", "")
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = item.partition(":")
        out[name] = int(nth or 1)
    return out


def failpoint(name: str) -> None:
    armed = _armed()
    if name not in armed:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= armed[name]:
        os._exit(EXIT_CODE)
