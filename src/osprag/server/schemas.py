"""Request bodies of the HTTP API. Responses are the Python API's ``to_dict()`` shapes, so the
CLI's ``--json``, the Python API and HTTP describe a hit the same way."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_QUERY_CHARS = 2000
MAX_BATCH = 64


class QueryOptions(BaseModel):
    """Every option of ``KnowledgeBase.query`` except the principal, which the token decides."""

    model_config = ConfigDict(extra="forbid")

    layers: list[str] | None = Field(None, description="layers to search; default all, core first")
    n_results: int = Field(5, ge=1, le=1000)
    where: dict[str, Any] | None = Field(None, description="Chroma-style metadata filter")
    where_document: dict[str, Any] | None = Field(None, description="$contains / $not_contains")
    include: list[Literal["documents", "metadatas"]] = ["documents", "metadatas"]
    min_score: float | None = Field(
        None, allow_inf_nan=False, description="calibrated relevance threshold 0..1"
    )
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    alpha: float | None = Field(None, ge=0, le=1, description="hybrid: weight of the dense leg")
    include_history: bool = Field(False, description="also search obsolete/withdrawn documents")
    route_tags: bool | None = None
    expand: bool | None = Field(None, description="glossary expansion of the lexical leg")
    layer_min: dict[str, int] | None = Field(None, description="minimum hits per layer")
    explain: bool = False

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class QueryRequest(QueryOptions):
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)


class BatchQueryRequest(QueryOptions):
    queries: list[str] = Field(..., min_length=1, max_length=MAX_BATCH)
