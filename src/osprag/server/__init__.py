"""``osp serve``: the HTTP API and web page over the Python API (see docs/server.md)."""

from __future__ import annotations

from .app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
