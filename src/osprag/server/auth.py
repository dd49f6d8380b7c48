"""Who is calling the server: bearer tokens (stored hashed), roles, clearance, proxied users.

Tokens are random 256-bit strings, so an unsalted SHA-256 is enough to store them (they are not
passwords: nothing to brute-force) and lets the server find one without keeping it in clear.
Every presented token is compared against every stored hash with ``hmac.compare_digest`` and no
early exit, so timing says nothing about which prefix matched.

A token marked ``proxy`` (a chat front end such as Open WebUI) may name the end user in a header;
the user's clearance then comes from osprag's user table, capped by the proxy token's own. The
header is ignored for every other token, so nobody can raise their clearance by sending it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from osprag.config import Settings
from osprag.errors import AccessDenied, ConfigError, RateLimited, Unauthorized
from osprag.principal import LOCAL, Principal, Role

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOKEN_PREFIX = "osp_"
ROLES: tuple[Role, ...] = ("reader", "editor", "admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    role: Role
    clearance: int
    proxy: bool = False
    rate_limit: float | None = None


@dataclass(frozen=True)
class UserEntry:
    email: str
    clearance: int
    role: Role = "reader"


def _check_entry(where: str, role: Any, clearance: Any) -> None:
    if role not in ROLES:
        raise ConfigError(f"{where}: role must be reader, editor or admin, got {role!r}")
    if isinstance(clearance, bool) or clearance not in (1, 2, 3, 4):
        raise ConfigError(f"{where}: clearance must be 1..4, got {clearance!r}")


def tokens_path(settings: Settings) -> Path:
    return settings.server.tokens_file or settings.data_dir / "tokens.toml"


@dataclass
class TokenFile:
    """The TOML file ``osp token`` / ``osp user`` edit; the server re-reads it when it changes."""

    path: Path
    tokens: list[TokenEntry] = field(default_factory=list)
    users: list[UserEntry] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        if not path.exists():
            return cls(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"tokens file {path} is unreadable: {exc}",
                hint="fix or remove it; `osp token create` writes a valid one",
            ) from None
        out = cls(path)
        for i, t in enumerate(data.get("tokens", [])):
            where = f"{path}: tokens[{i}]"
            if not isinstance(t, dict) or not {"name", "sha256"} <= t.keys():
                raise ConfigError(f"{where} needs name and sha256")
            role, clearance = t.get("role", "reader"), t.get("clearance", 1)
            _check_entry(where, role, clearance)
            digest = str(t["sha256"]).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{where}: sha256 must be 64 hex digits")
            limit = t.get("rate_limit")
            out.tokens.append(
                TokenEntry(
                    str(t["name"]),
                    digest,
                    role,
                    clearance,
                    bool(t.get("proxy", False)),
                    float(limit) if limit is not None else None,
                )
            )
        for i, u in enumerate(data.get("users", [])):
            where = f"{path}: users[{i}]"
            if not isinstance(u, dict) or "email" not in u:
                raise ConfigError(f"{where} needs email")
            role, clearance = u.get("role", "reader"), u.get("clearance", 1)
            _check_entry(where, role, clearance)
            out.users.append(UserEntry(str(u["email"]).strip().lower(), clearance, role))
        return out

    def save(self) -> None:
        lines = ["# osprag API tokens (hashes only) and proxied users; edit with `osp token`.", ""]
        for t in self.tokens:
            lines += [
                "[[tokens]]",
                f"name = {_q(t.name)}",
                f'sha256 = "{t.sha256}"',
                f'role = "{t.role}"',
                f"clearance = {t.clearance}",
                f"proxy = {'true' if t.proxy else 'false'}",
            ]
            if t.rate_limit is not None:
                lines.append(f"rate_limit = {t.rate_limit}")
            lines.append("")
        for u in self.users:
            lines += [
                "[[users]]",
                f"email = {_q(u.email)}",
                f"clearance = {u.clearance}",
                f'role = "{u.role}"',
                "",
            ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
        os.replace(tmp, self.path)


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TokenStore:
    """The tokens the server accepts: the file's, plus one admin token from env or a secret."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = tokens_path(settings)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._file = TokenFile(self.path)
        self._extra: list[TokenEntry] = []
        env = settings.server.token.get_secret_value() if settings.server.token else None
        if env:
            self._extra.append(TokenEntry("env-admin", hash_token(env.strip()), "admin", 4))
        secret = settings.server.token_file
        if secret is not None:
            try:
                value = secret.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"token file {secret} is unreadable: {exc.strerror or exc}",
                    hint="check OSP_SERVER__TOKEN_FILE and the file's permissions",
                ) from None
            if not value:
                raise ConfigError(f"token file {secret} is empty")
            self._extra.append(TokenEntry("secret-admin", hash_token(value), "admin", 4))
        self._refresh()

    def _refresh(self) -> None:
        """Re-read the file when its mtime or size changed (``osp token`` needs no restart)."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._file = TokenFile.load(self.path) if stamp else TokenFile(self.path)
            self._stamp = stamp

    @property
    def configured(self) -> bool:
        with self._lock:
            self._refresh()
            return bool(self._extra or self._file.tokens)

    def find(self, token: str) -> TokenEntry | None:
        digest = hash_token(token)
        with self._lock:
            self._refresh()
            entries = self._extra + self._file.tokens
        found = None
        for entry in entries:  # no early exit: constant work per request
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def user(self, email: str) -> UserEntry | None:
        key = email.strip().lower()
        with self._lock:
            self._refresh()
            return next((u for u in self._file.users if u.email == key), None)


class RateLimiter:
    """A token bucket per caller: ``rate`` requests per second with bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, rate: float | None = None) -> None:
        r = rate or self.rate
        burst = max(2.0 * r, 1.0)
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.get(key, (burst, now))
            level = min(burst, level + (now - last) * r)
            if level < 1.0:
                self._buckets[key] = (level, now)
                wait = (1.0 - level) / r
                raise RateLimited(
                    f"more than {r:g} requests per second for {key!r}",
                    retry_after=wait,
                    hint=f"retry after {wait:.2f} s",
                )
            self._buckets[key] = (level - 1.0, now)


Outcome = Literal["local", "token", "proxied"]


@dataclass
class Caller:
    principal: Principal
    token: str | None  # the token's name (rate limiting, metrics), None for the local admin
    how: Outcome
    rate: float | None = None


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = TokenStore(settings)

    def resolve(self, authorization: str | None, headers: dict[str, str]) -> Caller:
        """The caller behind a request's headers (lower-cased names)."""
        if not self.tokens.configured:
            return Caller(LOCAL, None, "local")
        if not authorization:
            raise Unauthorized("this server needs a token", hint="send Authorization: Bearer …")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("expected Authorization: Bearer <token>")
        entry = self.tokens.find(value.strip())
        if entry is None:
            raise Unauthorized("unknown or revoked token", hint="ask an admin for a token")
        principal = Principal(name=entry.name, clearance=entry.clearance, role=entry.role)
        user_header = self.settings.server.user_header.lower()
        email = headers.get(user_header, "").strip()
        if entry.proxy and email:
            user = self.tokens.user(email)
            if user is None:
                raise AccessDenied(
                    f"user {email!r} is not known to osprag",
                    hint="an admin adds them with `osp user add EMAIL --clearance N`",
                )
            role: Role = min(user.role, entry.role, key=ROLES.index)
            principal = Principal(
                name=f"{entry.name}:{user.email}",
                clearance=min(user.clearance, entry.clearance),
                role=role,
            )
            return Caller(principal, entry.name, "proxied", entry.rate_limit)
        return Caller(principal, entry.name, "token", entry.rate_limit)


def require(caller: Caller, role: Role) -> None:
    if not caller.principal.has_role(role):
        raise AccessDenied(
            f"{caller.principal.name!r} has role {caller.principal.role}; this needs {role}"
        )
