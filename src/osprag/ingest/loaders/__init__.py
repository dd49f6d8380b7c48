"""File → ``LoadedDocument``, one module per format, dispatched on the file suffix.

Every failure a document can cause (unreadable, corrupt, encrypted, binary, empty, zip bomb)
leaves here as an ``IngestError`` with a one-line reason, never as a library traceback: the
caller reports it for that file and goes on with the others. Library warnings and log records
are collected into ``LoadedDocument.warnings`` instead of going to stderr.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument

from .delimited import load_csv
from .markdown import load_markdown
from .pdf import load_pdf
from .plaintext import load_txt
from .slides import load_pptx
from .webpage import load_html
from .word import load_docx
from .workbook import load_xlsx

Loader = Callable[[Path, bytes], LoadedDocument]

LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
    ".txt": load_txt,
    ".csv": load_csv,
    ".xlsx": load_xlsx,
    ".pptx": load_pptx,
}
SUPPORTED_SUFFIXES = frozenset(LOADERS)
_MAX_LIBRARY_WARNINGS = 5

__all__ = [
    "LOADERS",
    "SUPPORTED_SUFFIXES",
    "load_file",
    "os_error_reason",
    "read_file_bytes",
    "too_large",
]


def read_file_bytes(path: Path, *, max_bytes: int | None = None) -> bytes:
    """The file's bytes, refusing what is not a regular file or is over ``max_bytes``.

    Opened non-blocking so a FIFO named ``x.txt`` cannot hang the reader; size checked on the
    open descriptor so the file is not read at all when it is too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise IngestError(os_error_reason(exc), path=str(path)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IngestError("not a regular file", path=str(path))
        if max_bytes is not None and info.st_size > max_bytes:
            raise IngestError(too_large(info.st_size, max_bytes), path=str(path))
        if info.st_size == 0:
            raise IngestError("empty file (0 bytes)", path=str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as exc:
        raise IngestError(os_error_reason(exc), path=str(path)) from None
    finally:
        os.close(fd)
    if max_bytes is not None and len(data) > max_bytes:  # grew while we read it
        raise IngestError(too_large(len(data), max_bytes), path=str(path))
    return data


def too_large(size: int, limit: int) -> str:
    return f"file too large ({size / 2**20:.1f} MB > limit {limit / 2**20:.0f} MB)"


def os_error_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "cannot open: symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot open: permission denied"
    if exc.errno == errno.ENOENT:
        return "cannot open: file not found (or a dangling symlink)"
    if exc.errno == errno.EISDIR:
        return "not a regular file (directory)"
    return f"cannot read: {exc.strerror or exc}"


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(f"{record.name.split('.')[0]}: {record.getMessage()}")


@contextmanager
def _library_noise(sink: list[str]) -> Iterator[None]:
    """pypdf logs and openpyxl warns about damaged files; both become document warnings."""
    logger = logging.getLogger("pypdf")
    handler = _Collect(sink)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for item in caught:
            # ResourceWarnings come from the garbage collector finalising unrelated objects
            noise = DeprecationWarning | PendingDeprecationWarning | ResourceWarning
            if not issubclass(item.category, noise):
                sink.append(f"{item.category.__name__}: {item.message}")
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def load_file(path: Path, *, max_bytes: int | None = None) -> LoadedDocument:
    """Read one document. Raises ``IngestError`` for anything that cannot be ingested."""
    path = Path(path)
    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix)
    if loader is None:
        raise IngestError(
            f"unsupported format {suffix or '(no extension)'}",
            path=str(path),
            hint="supported: " + " ".join(sorted(SUPPORTED_SUFFIXES)),
        )
    data = read_file_bytes(path, max_bytes=max_bytes)
    noise: list[str] = []
    try:
        with _library_noise(noise):
            document = loader(path, data)
    except (IngestError, MemoryError):
        raise
    except RecursionError:
        raise IngestError(
            f"corrupt {suffix[1:].upper()} (nested too deeply)", path=str(path)
        ) from None
    except Exception as exc:  # a library's parse error is a property of the file, not a bug here
        reason = " ".join(str(exc).split())[:200]
        raise IngestError(
            f"cannot read {suffix[1:].upper()} ({type(exc).__name__}: {reason})", path=str(path)
        ) from None
    document.warnings.extend(list(dict.fromkeys(noise))[:_MAX_LIBRARY_WARNINGS])
    return document
