"""Keep a serving process's memory flat: at most two glibc malloc arenas.

glibc gives each thread that allocates concurrently its own arena (up to 8 × cores) and rarely
returns their memory, so a server answering requests from a thread pool while an upload is
embedded grows by hundreds of MB it never uses again (bench/http_load.py). ``MALLOC_ARENA_MAX``
fixes that but must be set before the process starts; ``mallopt(M_ARENA_MAX)`` does the same
from inside, as long as it runs before the worker threads exist. An explicit
``MALLOC_ARENA_MAX`` in the environment wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """True when the limit was applied (glibc on Linux, not overridden by the environment)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl (Alpine) has no mallopt
        return False
