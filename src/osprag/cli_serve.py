"""``osp serve`` and the token/user tables it reads (``osp token``, ``osp user``)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING

import click
from rich.table import Table

from .cli import _emit, _err, _out, _state
from .errors import ConfigError, InvalidInput, NotFound

if TYPE_CHECKING:
    from .server.auth import TokenFile

_ROLE = click.Choice(["reader", "editor", "admin"])
_LEVEL = click.IntRange(1, 4)


@click.command()
@click.option("--host", help="bind address (OSP_SERVER__HOST, default 127.0.0.1)")
@click.option("--port", type=click.IntRange(1, 65535), help="port (OSP_SERVER__PORT, 8765)")
@click.option("--workers", type=click.IntRange(1, 64), help="processes (server storage only)")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the HTTP API and web page (docs/server.md)."""
    import uvicorn

    from .server.app import check_bind, create_app
    from .server.auth import Authenticator
    from .server.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before uvicorn's and the app's threads exist

    state = _state()
    settings = state.settings
    if "embedding_spin" not in settings.model_fields_set:
        # Spinning query threads help one caller and hurt a server: they take the cores from
        # the event loop and the other requests (onnx_backend._new_session).
        settings = settings.model_copy(update={"embedding_spin": False})
        os.environ.setdefault("OSP_EMBEDDING_SPIN", "false")  # for --workers processes
    host = host or settings.server.host
    port = port or settings.server.port
    workers = workers or settings.server.workers
    if workers > 1 and settings.effective_storage != "server":
        raise ConfigError(
            "--workers > 1 needs a Chroma server (several processes on one embedded data dir "
            "would lose writes)",
            hint="set OSP_CHROMA_URL, or run one worker",
        )
    if not state.quiet:
        _err().print(f"osprag serving on http://{host}:{port} ({settings.effective_storage})")
    if workers > 1:
        check_bind(settings, host, Authenticator(settings))
        for key, value in state.overrides.items():  # each worker builds settings from env
            os.environ[f"OSP_{key.upper()}"] = str(value)
        os.environ["OSP_SERVER__HOST"] = host
        uvicorn.run(
            "osprag.server.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning" if state.quiet else "info",
        )
        return
    app = create_app(settings, host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning" if state.quiet else "info")


@click.group()
def token() -> None:
    """API tokens of osp serve (stored hashed in the tokens file)."""


def _file() -> TokenFile:
    from .server.auth import TokenFile, tokens_path

    return TokenFile.load(tokens_path(_state().settings))


@token.command("create")
@click.argument("name")
@click.option("--role", type=_ROLE, default="reader", show_default=True)
@click.option("--clearance", type=_LEVEL, required=True, help="highest access level readable")
@click.option("--proxy", is_flag=True, help="may name the end user (Open WebUI) in a header")
@click.option("--rate-limit", type=float, help="requests per second (default the server's)")
@click.option("--json", "json_mode", is_flag=True)
def token_create(
    name: str, role: str, clearance: int, proxy: bool, rate_limit: float | None, json_mode: bool
) -> None:
    """Create a token; it is printed once and only its hash is stored."""
    from .server.auth import TokenEntry, hash_token, new_token

    tf = _file()
    if any(t.name == name for t in tf.tokens):
        raise InvalidInput(f"a token named {name!r} exists", hint="revoke it first or pick a name")
    value = new_token()
    tf.tokens.append(
        TokenEntry(name, hash_token(value), role, clearance, proxy, rate_limit)  # type: ignore[arg-type]
    )
    tf.save()
    if json_mode:
        _emit(
            {
                "name": name,
                "token": value,
                "role": role,
                "clearance": clearance,
                "file": str(tf.path),
            }
        )
        return
    _err().print(
        f"token {name!r} ({role}, clearance {clearance}) stored in {tf.path}; copy it now:"
    )
    click.echo(value)


@token.command("list")
@click.option("--json", "json_mode", is_flag=True)
def token_list(json_mode: bool) -> None:
    """Token names, roles and clearances (never the tokens)."""
    tf = _file()
    if json_mode:
        _emit(
            [
                {"name": t.name, "role": t.role, "clearance": t.clearance, "proxy": t.proxy}
                for t in tf.tokens
            ]
        )
        return
    table = Table("name", "role", "clearance", "proxy")
    for t in tf.tokens:
        table.add_row(t.name, t.role, str(t.clearance), "yes" if t.proxy else "")
    _out().print(table)


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Remove a token; a running server stops accepting it at its next request."""
    tf = _file()
    kept = [t for t in tf.tokens if t.name != name]
    if len(kept) == len(tf.tokens):
        raise NotFound(f"no token named {name!r}", hint="`osp token list` shows them")
    tf.tokens = kept
    tf.save()
    _err().print(f"token {name!r} revoked")


@click.group()
def user() -> None:
    """End users a proxy token (Open WebUI) may name, with their clearance."""


@user.command("add")
@click.argument("email")
@click.option("--clearance", type=_LEVEL, required=True)
@click.option("--role", type=_ROLE, default="reader", show_default=True)
def user_add(email: str, clearance: int, role: str) -> None:
    """Add or update a user."""
    from .server.auth import UserEntry

    tf = _file()
    key = email.strip().lower()
    if "@" not in key:
        raise InvalidInput(f"{email!r} is not an e-mail address")
    entry = UserEntry(key, clearance, role)  # type: ignore[arg-type]
    tf.users = [u for u in tf.users if u.email != key] + [entry]
    tf.save()
    _err().print(f"user {key} has clearance {clearance} ({role})")


@user.command("remove")
@click.argument("email")
def user_remove(email: str) -> None:
    tf = _file()
    key = email.strip().lower()
    kept = [u for u in tf.users if u.email != key]
    if len(kept) == len(tf.users):
        raise NotFound(f"no user {key!r}")
    tf.users = kept
    tf.save()
    _err().print(f"user {key} removed")


@user.command("list")
@click.option("--json", "json_mode", is_flag=True)
def user_list(json_mode: bool) -> None:
    rows = [asdict(u) for u in _file().users]
    if json_mode:
        _emit(rows)
        return
    table = Table("email", "clearance", "role")
    for r in rows:
        table.add_row(r["email"], str(r["clearance"]), r["role"])
    _out().print(table)


COMMANDS = [serve, token, user]
