"""What both retrievers share: who searches, with which options, and how a hit's metadata looks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from osprag.client import QUERY_OPTIONS, RemoteKnowledgeBase
from osprag.errors import InvalidInput
from osprag.principal import Principal
from osprag.results import Hit, QueryResult

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase

SCORE_KEYS = ("layer", "relevance", "score", "rank")
"""Added to each hit's metadata; the first names the layer, the rest say how it ranked."""

_INCLUDE = ("documents", "metadatas")  # a retriever always needs the text and the metadata
_FIXED = {"include", "principal"}


def missing_extra(extra: str, package: str) -> str:
    return (
        f"osprag's {extra} integration needs {package}, which is not installed: "
        f"pip install 'osprag[{extra}]'"
    )


def _is_local(kb: object) -> TypeGuard[KnowledgeBase]:
    # Checked through sys.modules so that a remote-only app never imports the store (chromadb):
    # an object cannot be a KnowledgeBase unless that module was imported.
    module = sys.modules.get("osprag.knowledge_base")
    return module is not None and isinstance(kb, module.KnowledgeBase)


@dataclass(frozen=True)
class Search:
    """One configured search: a knowledge base, the principal (local only) and the options."""

    kb: KnowledgeBase | RemoteKnowledgeBase
    principal: Principal | None
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        kb: object,
        principal: Principal | None,
        *,
        layers: str | Sequence[str] | None,
        n_results: int,
        where: Mapping[str, Any] | None,
        mode: str | None,
        min_score: float | None,
        extra: Mapping[str, Any],
    ) -> Search:
        """Check everything a query would reject later, so a bad retriever fails when built."""
        target: KnowledgeBase | RemoteKnowledgeBase
        if isinstance(kb, RemoteKnowledgeBase):
            target = kb
            if principal is not None:
                raise InvalidInput(
                    "a remote knowledge base takes no principal: the server derives it from "
                    "the token",
                    hint="use a token with the clearance you need (`osp token create`)",
                )
        elif _is_local(kb):
            target = kb
            if not isinstance(principal, Principal):
                raise InvalidInput(
                    "a local knowledge base needs principal=Principal(name, clearance) so "
                    "that clearance holds",
                    hint="pass osprag.LOCAL only where the caller may read everything",
                )
        else:
            raise InvalidInput(
                f"kb must be a KnowledgeBase or RemoteKnowledgeBase, got {type(kb).__name__}"
            )
        if isinstance(n_results, bool) or not isinstance(n_results, int) or n_results < 1:
            raise InvalidInput(f"n_results must be an integer >= 1, got {n_results!r}")
        bad = sorted(set(extra) & _FIXED) or sorted(set(extra) - set(QUERY_OPTIONS))
        if bad:
            raise InvalidInput(
                f"unsupported search option(s) {', '.join(bad)}",
                hint=f"known: {', '.join(o for o in QUERY_OPTIONS if o != 'include')}",
            )
        options: dict[str, Any] = {
            "layers": [layers] if isinstance(layers, str) else layers,
            "n_results": n_results,
            "where": where,
            "mode": mode,
            "min_score": min_score,
            **extra,
        }
        options = {k: v for k, v in options.items() if v is not None}
        options["include"] = _INCLUDE
        return cls(target, principal, options)

    def run(self, text: str) -> QueryResult:
        if isinstance(self.kb, RemoteKnowledgeBase):
            return self.kb.query(text, **self.options)
        assert self.principal is not None  # build() checked it
        return cast(QueryResult, self.kb.query(text, principal=self.principal, **self.options))

    async def arun(self, text: str) -> QueryResult:
        """Remote: a non-blocking request. Local: ``run`` in a worker thread, as ``osp serve``
        runs its queries, so the event loop keeps serving while the model and Chroma work."""
        if isinstance(self.kb, RemoteKnowledgeBase):
            return await self.kb.aquery(text, **self.options)
        return await asyncio.to_thread(self.run, text)


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """osprag's metadata (source, title, page, section, doc_type, access_level, version, …)
    plus the layer and the ranking: ``relevance`` (calibrated P(relevant), what min_score
    filters on), ``score`` (the mode's ranking score) and ``rank``."""
    meta = dict(hit.metadata)
    meta.update(layer=hit.layer, relevance=hit.relevance, score=hit.score, rank=hit.rank)
    return meta


def node_score(hit: Hit) -> float:
    """The calibrated relevance when the server computed one: one threshold means one thing
    across queries and modes (a raw hybrid score gives every query's top hit 1.0)."""
    return hit.relevance if hit.relevance is not None else hit.score
