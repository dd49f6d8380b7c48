"""Backup archives: a tar (gzip) of layer export files behind a manifest, optionally encrypted.

Layout: ``manifest.json`` first, then ``layers/<layer>.jsonl``. The manifest carries the
osprag and chromadb versions, per-layer embedding identity, index config and counts, and the
sha256 and size of every member. Reading is one streaming pass that refuses, before anything
is restored: a member not in the manifest or missing from the archive, a changed byte (sha256),
a path that is absolute or climbs (``..``), links, devices and directories, and members larger
than the manifest says or than ``MAX_MEMBER``.

Encryption (``--key-file``): AES-256-GCM over 1 MiB frames with a per-archive random nonce
prefix and a frame counter; the last frame is marked in the authenticated data, so a
reordered, truncated or extended archive fails to decrypt. Memory stays at one frame.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from osprag.errors import BackupInvalid, ConfigError

MAGIC = b"OSPENC01"
FRAME = 1 << 20
MANIFEST = "manifest.json"
FORMAT = "osprag-backup"
VERSION = 1
MAX_MANIFEST = 4 << 20
MAX_MEMBER = 1 << 40  # 1 TiB: far above any store, far below "unbounded"
_MEMBER = re.compile(r"^layers/[a-z][a-z0-9_-]{1,40}\.jsonl$")


# ------------------------------------------------------------------ keys


def load_key(path: Path) -> bytes:
    """A 256-bit key from a file: 32 raw bytes, 64 hex characters, or base64 of 32 bytes."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) == 32:
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == 32:
            return key
    raise ConfigError(
        f"key file {path} does not hold a 256-bit key",
        hint="create one with `osp backup keygen FILE` (64 hex characters)",
    )


def generate_key(path: Path) -> Path:
    """Write a new random key (hex) with mode 0600; refuses to overwrite an existing file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"key file {path} exists", hint="keep it, or choose another path"
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(32).hex() + "\n")
    return path


# ------------------------------------------------------------------ encryption


class EncryptingWriter(io.RawIOBase):
    """Write-only stream that encrypts frame by frame into ``sink``."""

    def __init__(self, sink: IO[bytes], key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._sink = sink
        self._aead = AESGCM(key)
        self._prefix = os.urandom(8)
        self._counter = 0
        self._buf = bytearray()
        sink.write(MAGIC + self._prefix)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buf.extend(data)
        while len(self._buf) > FRAME:
            self._frame(bytes(self._buf[:FRAME]), last=False)
            del self._buf[:FRAME]
        return len(data)

    def _frame(self, plain: bytes, last: bool) -> None:
        nonce = self._prefix + struct.pack(">I", self._counter)
        aad = MAGIC + self._prefix + (b"\x01" if last else b"\x00")
        sealed = self._aead.encrypt(nonce, plain, aad)
        self._sink.write(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1

    def close(self) -> None:
        if not self.closed:
            self._frame(bytes(self._buf), last=True)
            self._buf.clear()
        super().close()


class DecryptingReader(io.RawIOBase):
    """Read-only stream that authenticates and decrypts one frame at a time."""

    def __init__(self, source: IO[bytes], key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._src = source
        self._aead = AESGCM(key)
        head = source.read(len(MAGIC) + 8)
        if head[: len(MAGIC)] != MAGIC or len(head) != len(MAGIC) + 8:
            raise BackupInvalid("archive is not an osprag encrypted archive")
        self._prefix = head[len(MAGIC) :]
        self._counter = 0
        self._buf = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        from cryptography.exceptions import InvalidTag

        size_raw = self._src.read(4)
        if len(size_raw) < 4:
            raise BackupInvalid("encrypted archive is truncated (no final frame)")
        (size,) = struct.unpack(">I", size_raw)
        if size > FRAME + 16:
            raise BackupInvalid("encrypted archive has an oversized frame (corrupt)")
        sealed = self._src.read(size)
        if len(sealed) < size:
            raise BackupInvalid("encrypted archive is truncated")
        nonce = self._prefix + struct.pack(">I", self._counter)
        for last in (False, True):
            aad = MAGIC + self._prefix + (b"\x01" if last else b"\x00")
            try:
                self._buf = self._aead.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            self._counter += 1
            if last:
                self._done = True
                if self._src.read(1):
                    raise BackupInvalid("encrypted archive has data after its final frame")
            return
        raise BackupInvalid(
            "archive does not decrypt: wrong key or changed bytes",
            hint="check --key-file (OSP_BACKUP_KEY_FILE); a tampered archive cannot be used",
        )

    def readinto(self, buffer: Any) -> int:
        while not self._buf and not self._done:
            self._next()
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def is_encrypted(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


# ------------------------------------------------------------------ writing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """Passes bytes through to ``sink`` and hashes them (the archive's sha256 for free)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self._sink.write(data)
        return len(data)


# Vectors in base64 hardly compress; level 1 keeps most of level 9's gain on the text at a
# fraction of its CPU (a 100k-chunk backup is CPU-bound on 2 cores).
GZIP_LEVEL = 1


def write_archive(target: Path, staging: Path, manifest: dict[str, Any], key: bytes | None) -> str:
    """Tar ``manifest`` + the staged ``layers/*.jsonl`` into ``target`` (mode 0600, atomic);
    returns the sha256 of the archive file."""
    members = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*.jsonl"))
    manifest["files"] = {
        name: {"sha256": sha256_file(staging / name), "size": (staging / name).stat().st_size}
        for name in members
    }
    body = json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
    tmp = target.with_name(f".{target.name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            hashed = _HashingWriter(raw)
            sink: Any = EncryptingWriter(hashed, key) if key else hashed  # type: ignore[arg-type]
            zipped = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
            with tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(MANIFEST, len(body), manifest), io.BytesIO(body))
                for name in members:
                    path = staging / name
                    with open(path, "rb") as fh:
                        tar.addfile(_info(name, path.stat().st_size, manifest), fh)
            zipped.close()
            if key:
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashed.digest.hexdigest()


def _info(name: str, size: int, manifest: dict[str, Any]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(manifest.get("created_ts", 0))
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ------------------------------------------------------------------ reading


@dataclass
class Extracted:
    manifest: dict[str, Any]
    root: Path

    def layer_file(self, layer: str) -> Path:
        return self.root / "layers" / f"{layer}.jsonl"


def _check_member(info: tarfile.TarInfo, files: dict[str, Any], seen: set[str]) -> None:
    name = info.name
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or "" in parts:
        raise BackupInvalid(f"archive member {name!r} has an unsafe path; refused")
    if not info.isreg():
        kind = (
            "symlink"
            if info.issym()
            else "hard link"
            if info.islnk()
            else "device"
            if info.isdev()
            else "directory"
            if info.isdir()
            else "special file"
        )
        raise BackupInvalid(f"archive member {name!r} is a {kind}; only regular files allowed")
    if name in seen:
        raise BackupInvalid(f"archive member {name!r} appears twice")
    if name not in files or not _MEMBER.match(name):
        raise BackupInvalid(f"archive member {name!r} is not listed in the manifest")
    if info.size != files[name]["size"] or info.size > MAX_MEMBER:
        raise BackupInvalid(
            f"archive member {name!r} is {info.size} bytes, the manifest says {files[name]['size']}"
        )


def read_archive(path: Path, dest: Path | None, key: bytes | None) -> Extracted:
    """Verify an archive in one streaming pass; with ``dest``, also extract its members there.

    Raises ``BackupInvalid`` naming the first problem. Nothing outside ``dest`` is written.
    """
    path = Path(path)
    if not path.is_file():
        raise BackupInvalid(f"archive {path} does not exist")
    encrypted = is_encrypted(path)
    if encrypted and key is None:
        raise BackupInvalid(
            f"archive {path.name} is encrypted", hint="pass --key-file (or OSP_BACKUP_KEY_FILE)"
        )
    with open(path, "rb") as raw:
        source: Any = io.BufferedReader(DecryptingReader(raw, key)) if encrypted and key else raw
        # gzip is read by GzipFile (not tarfile's stream) so its CRC and length trailer are
        # checked: a truncated archive is refused even where tar padding hides the cut.
        source = gzip.GzipFile(fileobj=source, mode="rb")
        try:
            extracted = _read_tar(source, dest)
            while source.read(1 << 20):
                pass
            return extracted
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
            if isinstance(exc, BackupInvalid):
                raise
            raise BackupInvalid(f"archive {path.name} is damaged: {exc}") from None


def _read_tar(source: IO[bytes], dest: Path | None) -> Extracted:
    manifest: dict[str, Any] | None = None
    seen: set[str] = set()
    with tarfile.open(fileobj=source, mode="r|") as tar:
        for info in tar:
            if manifest is None:
                manifest = _read_manifest(tar, info)
                continue
            files = manifest["files"]
            _check_member(info, files, seen)
            seen.add(info.name)
            fh = tar.extractfile(info)
            assert fh is not None
            digest = hashlib.sha256()
            out = None
            if dest is not None:
                target = dest / info.name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                out = open(  # noqa: SIM115
                    os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
                )
            try:
                size = 0
                for block in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                    size += len(block)
                    if size > info.size:
                        raise BackupInvalid(f"archive member {info.name!r} overruns its size")
                    digest.update(block)
                    if out is not None:
                        out.write(block)
            finally:
                if out is not None:
                    out.close()
            if digest.hexdigest() != files[info.name]["sha256"]:
                raise BackupInvalid(
                    f"archive member {info.name!r} fails its sha256 check (changed bytes)",
                    hint="the archive is damaged or tampered with; use another backup",
                )
    if manifest is None:
        raise BackupInvalid("archive is empty (no manifest)")
    missing = sorted(set(manifest["files"]) - seen)
    if missing:
        raise BackupInvalid(f"archive lacks members listed in its manifest: {missing}")
    return Extracted(manifest, dest or Path())


def _read_manifest(tar: tarfile.TarFile, info: tarfile.TarInfo) -> dict[str, Any]:
    if info.name != MANIFEST or not info.isreg():
        raise BackupInvalid(f"archive does not start with {MANIFEST} (found {info.name!r})")
    if info.size > MAX_MANIFEST:
        raise BackupInvalid("archive manifest is implausibly large")
    fh = tar.extractfile(info)
    assert fh is not None
    try:
        manifest = json.loads(fh.read(MAX_MANIFEST))
    except ValueError:
        raise BackupInvalid("archive manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupInvalid("archive manifest is not an osprag backup manifest")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
        raise BackupInvalid(
            f"backup format version {manifest.get('version')!r} is newer than this osprag reads",
            hint="upgrade osprag",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict)
        and isinstance(v.get("sha256"), str)
        and isinstance(v.get("size"), int)
        and v["size"] >= 0
        for v in files.values()
    ):
        raise BackupInvalid("archive manifest has no valid file list")
    if not isinstance(manifest.get("layers"), dict):
        raise BackupInvalid("archive manifest has no layer list")
    return manifest
