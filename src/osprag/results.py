"""Typed results of the Python API; the CLI's ``--json`` and the HTTP API serialise these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def score_from_distance(distance: float, space: str) -> float:
    """A similarity where higher is better, comparable across layers of one space.

    cosine: 1 − d (the cosine similarity). ip: Chroma reports 1 − dot, so 1 − d is the dot
    product (= cosine for normalised vectors). l2: Chroma reports the squared distance; for
    unit vectors d = 2 − 2·cos, so 1 − d/2 is again the cosine similarity.
    """
    if space == "l2":
        return 1.0 - distance / 2.0
    return 1.0 - distance


@dataclass
class Hit:
    id: str
    layer: str
    text: str | None
    metadata: dict[str, Any]
    distance: float | None  # the dense leg's distance; None for a lexical-only hit
    score: float  # the mode's ranking score (cosine, BM25 / best BM25, or the fused value)
    rank: int = 0
    relevance: float | None = None  # calibrated P(relevant), what min_score filters on
    explain: dict[str, Any] | None = None  # per-leg raw scores and ranks (query(explain=True))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.explain is None:
            data.pop("explain")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hit:
        """The inverse of ``to_dict``; keys a newer server adds are ignored, missing ones fail."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class QueryResult:
    query: str
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "hits": [h.to_dict() for h in self.hits],
            "timings_ms": self.timings_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryResult:
        return cls(
            query=data["query"],
            hits=[Hit.from_dict(h) for h in data["hits"]],
            timings_ms=dict(data.get("timings_ms") or {}),
        )


@dataclass
class Record:
    id: str
    layer: str
    text: str | None
    metadata: dict[str, Any]
    embedding: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.embedding is None:
            data.pop("embedding")
        return data


@dataclass
class WriteResult:
    layer: str
    op: str
    ids: list[str]
    embedded: int = 0
    cached: int = 0

    @property
    def count(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "op": self.op,
            "count": self.count,
            "ids": self.ids,
            "embedded": self.embedded,
            "cached": self.cached,
        }


@dataclass
class LayerStats:
    layer: str
    collection: str | None
    count: int
    description: str
    weight: float
    model: dict[str, Any] | None
    index: dict[str, Any] | None
    disk_bytes: int | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReindexReport:
    layer: str
    old_collection: str | None
    new_collection: str
    count: int
    model: str
    reembedded: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
