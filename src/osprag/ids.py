"""Deterministic record ids.

Ids never derive from the text alone: QM documents repeat boilerplate, and two documents at
different access levels may share a paragraph; both must be kept, each with its own level.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_id(layer: str, text: str, metadata: Mapping[str, Any] | None) -> str:
    """An id for a record added without one: same layer, text and metadata → same id."""
    payload = json.dumps([layer, text, dict(metadata or {})], sort_keys=True, ensure_ascii=False)
    return "r-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def chunk_id(layer: str, source: str, version: str, index: int) -> str:
    """The id of chunk ``index`` of one version of one source document in one layer."""
    if index < 0:
        raise ValueError("chunk index must be >= 0")
    doc = hashlib.sha256("\x00".join([layer, source, version]).encode("utf-8")).hexdigest()[:24]
    return f"c-{doc}-{index:05d}"
