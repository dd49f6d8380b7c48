"""What one app holds (on ``app.state.osp``), and the request dependencies that read it."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from osprag.config import Settings
from osprag.generate.llm import LLMClient
from osprag.knowledge_base import KnowledgeBase
from osprag.principal import Role

from .audit import AuditLog
from .auth import Authenticator, Caller, RateLimiter, require
from .metrics import Metrics


@dataclass
class ServerState:
    settings: Settings
    kb: KnowledgeBase
    auth: Authenticator
    limiter: RateLimiter
    metrics: Metrics
    audit: AuditLog
    owns_kb: bool
    # One writer at a time inside this process; readers never wait for it.
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    model_ready: bool = False
    llm: LLMClient | None = None  # shared by answers and chat; None = extractive answers


def state(request: Request) -> ServerState:
    value: ServerState = request.app.state.osp
    return value


# The dependencies are ``async`` on purpose: FastAPI runs a sync dependency in the thread pool,
# one hop per dependency per request (three on a query: state, role, the route). They do no
# blocking I/O (a stat of the tokens file, a hash), so they run on the event loop instead.


async def _state_dep(request: Request) -> ServerState:
    return state(request)


async def _caller_dep(request: Request) -> Caller:
    return caller(request)


def caller(request: Request) -> Caller:
    """Authenticate once per request; the rate limit applies to tokens, not the local admin."""
    cached: Caller | None = getattr(request.state, "caller", None)
    if cached is not None:
        return cached
    st = state(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    who = st.auth.resolve(headers.get("authorization"), headers)
    if who.token is not None:
        st.limiter.check(who.token, who.rate)
    request.state.caller = who
    return who


def role(needed: Role) -> Callable[[Request], Awaitable[Caller]]:
    async def dependency(request: Request) -> Caller:
        who = caller(request)
        require(who, needed)
        return who

    dependency.__name__ = f"require_{needed}"
    return dependency


reader = role("reader")
editor = role("editor")
admin = role("admin")

# Annotated dependencies, so route signatures stay short and ruff's B008 holds.
State = Annotated[ServerState, Depends(_state_dep)]
AnyCaller = Annotated[Caller, Depends(_caller_dep)]
Reader = Annotated[Caller, Depends(reader)]
Editor = Annotated[Caller, Depends(editor)]
Admin = Annotated[Caller, Depends(admin)]
