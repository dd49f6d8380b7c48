"""Run the loaders in a separate, resource-limited process, so that a hostile or broken file (a
zip bomb, a 500 MB workbook, a PDF that sends the parser into a loop) costs one file, not the
whole sync.

One persistent child process handles many files in turn: starting Python and importing the
format libraries costs far more than parsing a typical QM document, so the child is started
once and only replaced after it died (crash, memory limit, time limit). Parent and child speak
newline-delimited JSON over the child's stdin/stdout (``LoadedDocument.to_dict()``; never
pickle, so a compromised child cannot make the parent execute anything).

Limits: ``max_bytes`` is checked by the parent before the child sees the file; ``max_memory_mb``
is the child's address-space limit (RLIMIT_AS); ``max_seconds`` is enforced twice, as a CPU-time
limit inside the child (RLIMIT_CPU, per file) and as a wall-clock deadline in the parent, which
kills the child when it passes.

    with Parser(max_seconds=30) as parser:
        for path in paths:
            try:
                document = parser.parse(path)
            except IngestError as exc:
                report(path, exc)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from osprag.errors import IngestError
from osprag.ingest.model import LoadedDocument

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_MEMORY_MB = 1024
STARTUP_TIMEOUT = 60.0
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

# The child imports ``osprag.ingest`` without running ``osprag/__init__.py``: that file pulls in
# the embedding stack (numpy, pydantic, ...), which costs ~0.3 s per start and address space the
# memory limit should leave to the parser. numpy is blocked for the same reason (openpyxl would
# import it, 0.1 s, for nothing the loaders use).
_BOOTSTRAP = """\
import importlib.util, sys, types
spec = importlib.util.find_spec("osprag")
if spec is not None and spec.submodule_search_locations and "osprag" not in sys.modules:
    package = types.ModuleType("osprag")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["osprag"] = package
sys.modules.setdefault("numpy", None)  # openpyxl imports numpy if it can; the loaders never need it
from osprag.ingest.worker import main
main(sys.argv[1:])
"""


# --------------------------------------------------------------------------- parent side


class Parser:
    """A persistent parser process: ``parse(path)`` many files, ``close()`` once.

    Thread-safe (calls are serialised). Restarts the child after a crash or a limit hit; the
    number of starts is in ``starts``. Use one ``Parser`` per worker thread for parallelism.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
        start: bool = False,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.max_memory_mb = max_memory_mb
        self.starts = 0
        self.startup_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""
        self._next_id = 0
        self._lock = threading.Lock()
        self._closed = False
        if start:
            with self._lock:
                self._ensure_started()

    def __enter__(self) -> Parser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parse(self, path: Path | str) -> LoadedDocument:
        """The document at ``path``; ``IngestError`` for anything that cannot be ingested."""
        path = Path(path)
        _precheck(path, self.max_bytes)
        with self._lock:
            if self._closed:
                raise RuntimeError("Parser is closed")
            proc = self._ensure_started()
            self._next_id += 1
            request = {
                "id": self._next_id,
                "path": str(path.absolute()),
                "max_bytes": self.max_bytes,
                "max_seconds": self.max_seconds,
            }
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._died(path, timed_out=False) from None
            response = self._read_line(path, time.monotonic() + self.max_seconds)
        if response.get("id") != request["id"]:
            self._kill()
            raise IngestError("parser process answered out of turn", path=str(path))
        if response.get("ok"):
            return LoadedDocument.from_dict(response["document"])
        error = response.get("error") or {}
        if error.get("fatal"):
            with self._lock:
                self._kill()
        raise IngestError(
            str(error.get("message") or "unknown error"), path=str(path), hint=error.get("hint")
        )

    def close(self) -> None:
        """Let the child finish (EOF on its stdin), kill it if it does not within 2 s."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
            if proc is not None:
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.close()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                _close_pipes(proc)
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    # -- internals
    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self._kill()
        if self._stderr is None:
            self._stderr = tempfile.TemporaryFile()
        self._stderr.seek(0)
        self._stderr.truncate()
        started = time.monotonic()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        # One BLAS/OpenMP thread: openpyxl imports numpy when present, and per-thread arenas
        # would eat into the address-space limit.
        env.update(
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONIOENCODING="utf-8",
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, "--max-memory-mb", str(self.max_memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            close_fds=True,
            start_new_session=True,  # Ctrl-C goes to the parent, which closes the child
        )
        self._buffer = b""
        self.starts += 1
        ready = self._read_line(None, started + STARTUP_TIMEOUT)
        if not ready.get("ready"):
            self._kill()
            raise IngestError("parser process did not start")
        self.startup_seconds.append(time.monotonic() - started)
        return self._proc

    def _read_line(self, path: Path | None, deadline: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._died(path, timed_out=True)
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise self._died(path, timed_out=False)
                self._buffer += chunk
                if len(self._buffer) > MAX_RESPONSE_BYTES:
                    self._kill()
                    raise IngestError(
                        f"extracted text over {MAX_RESPONSE_BYTES // 2**20} MB", path=_s(path)
                    )
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            self._kill()
            raise IngestError("parser process sent garbage", path=_s(path)) from None
        if not isinstance(message, dict):
            self._kill()
            raise IngestError("parser process sent garbage", path=_s(path))
        return message

    def _died(self, path: Path | None, *, timed_out: bool) -> IngestError:
        """Kill/reap the child and describe why it stopped; the next parse starts a new one."""
        proc = self._proc
        self._kill()
        code = proc.returncode if proc is not None else None
        if path is None:
            return IngestError(f"parser process failed to start ({self._stderr_tail()})")
        if timed_out or code == -signal.SIGXCPU:
            return IngestError(
                f"exceeded time limit ({self.max_seconds:g} s)",
                path=_s(path),
                hint="raise max_seconds if the file is legitimately large",
            )
        reason = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
        return IngestError(
            f"exceeded memory limit ({self.max_memory_mb} MB) or crashed ({reason})",
            path=_s(path),
            hint=self._stderr_tail() or None,
        )

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError):
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 400))
            tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            self._stderr.seek(0)
            self._stderr.truncate()
            return tail[-1][:200] if tail else ""
        return ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
        proc.wait()
        _close_pipes(proc)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _s(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _precheck(path: Path, max_bytes: int) -> None:
    """What the parent can refuse without starting or bothering the child."""
    # Light import: the loader modules import their format libraries only when called.
    from osprag.ingest.loaders import SUPPORTED_SUFFIXES, os_error_reason, too_large

    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise IngestError(
            f"unsupported format {path.suffix.lower() or '(no extension)'}",
            path=str(path),
            hint="supported: " + " ".join(sorted(SUPPORTED_SUFFIXES)),
        )
    try:
        info = path.stat()
    except OSError as exc:
        raise IngestError(os_error_reason(exc), path=str(path)) from None
    if not stat.S_ISREG(info.st_mode):
        raise IngestError("not a regular file", path=str(path))
    if info.st_size > max_bytes:
        raise IngestError(too_large(info.st_size, max_bytes), path=str(path))


def parse_file(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
) -> LoadedDocument:
    """One file in a fresh limited process. For many files keep a ``Parser`` instead."""
    with Parser(
        max_bytes=max_bytes, max_seconds=max_seconds, max_memory_mb=max_memory_mb
    ) as parser:
        return parser.parse(path)


def parse_file_inline(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedDocument:
    """The same result in this process, without limits: for tests and debugging."""
    from osprag.ingest.loaders import load_file

    _precheck(Path(path), max_bytes)
    return load_file(Path(path), max_bytes=max_bytes)


# --------------------------------------------------------------------------- child side


def _limit_memory(megabytes: int) -> None:
    import resource

    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _limit_cpu(seconds: float) -> None:
    """CPU seconds for this file: the soft limit moves with the time already used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _handle(request: dict[str, Any], max_memory_mb: int) -> tuple[dict[str, Any], bool]:
    """(response, fatal): fatal means the process state is suspect and it should exit."""
    from osprag.ingest.loaders import load_file

    path = str(request.get("path", ""))
    try:
        _limit_cpu(float(request.get("max_seconds") or DEFAULT_MAX_SECONDS))
        document = load_file(Path(path), max_bytes=request.get("max_bytes"))
        return {"id": request.get("id"), "ok": True, "document": document.to_dict()}, False
    except IngestError as exc:
        message = exc.message.removeprefix(f"{path}: ")
        error: dict[str, Any] = {"message": message, "hint": exc.hint}
        return {"id": request.get("id"), "ok": False, "error": error}, False
    except MemoryError:
        error = {"message": f"exceeded memory limit ({max_memory_mb} MB)", "fatal": True}
        return {"id": request.get("id"), "ok": False, "error": error}, True
    except Exception as exc:  # a loader bug must not end the sync: report it for this file
        reason = " ".join(str(exc).split())[:200]
        error = {"message": f"internal error: {type(exc).__name__}: {reason}", "fatal": True}
        return {"id": request.get("id"), "ok": False, "error": error}, True


def _warm_up() -> None:
    """Import every format library before saying ready, so no file pays for an import."""
    import docx  # noqa: F401
    import openpyxl  # noqa: F401
    import pptx  # noqa: F401
    import pypdf  # noqa: F401

    import osprag.ingest.loaders  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Child entry point: JSON requests on stdin, one JSON response line each on stdout."""
    parser = argparse.ArgumentParser(prog="python -m osprag.ingest.worker")
    parser.add_argument("--max-memory-mb", type=int, default=DEFAULT_MAX_MEMORY_MB)
    args = parser.parse_args(argv)

    # Only this process's responses may reach the real stdout; whatever a library prints goes
    # to stderr instead of corrupting the protocol.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory(args.max_memory_mb)
    _warm_up()

    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n")
        out.flush()

    send({"ready": True, "pid": os.getpid()})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError:
            send({"ok": False, "error": {"message": "bad request", "fatal": False}})
            continue
        response, fatal = _handle(request, args.max_memory_mb)
        try:
            send(response)
        except MemoryError:
            send(
                {
                    "id": request.get("id"),
                    "ok": False,
                    "error": {
                        "message": f"exceeded memory limit ({args.max_memory_mb} MB)",
                        "fatal": True,
                    },
                }
            )
            fatal = True
        if fatal:
            sys.exit(3)


if __name__ == "__main__":
    main()
