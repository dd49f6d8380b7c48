"""LangChain retriever over osprag's search (``pip install 'osprag[langchain]'``).

::

    retriever = OspragRetriever(kb=kb, principal=Principal("qm-app", clearance=2), k=4)
    docs = retriever.invoke("Crimphöhe 0,35 mm²")

Hits become ``Document(page_content=text, metadata=…, id=chunk id)``; the metadata is osprag's
plus ``layer``, ``relevance`` (calibrated P(relevant)), ``score`` and ``rank``.
"""

from __future__ import annotations

from typing import Any

from osprag.integrations._common import Search, hit_metadata, missing_extra
from osprag.principal import Principal
from osprag.results import QueryResult

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr
except ImportError as exc:
    raise ImportError(missing_extra("langchain", "langchain-core")) from exc

__all__ = ["OspragRetriever"]


class OspragRetriever(BaseRetriever):
    """A LangChain retriever: hybrid search over osprag's layers under one clearance.

    ``kb`` is a local ``KnowledgeBase`` (then ``principal`` is required) or a
    ``RemoteKnowledgeBase`` (the token decides the clearance). ``k`` is accepted for
    ``n_results``; ``search_options`` holds further ``KnowledgeBase.query`` options.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    kb: Any
    principal: Principal | None = None
    layers: str | list[str] | None = None
    n_results: int = Field(5, validation_alias=AliasChoices("n_results", "k"))
    where: dict[str, Any] | None = None
    mode: str | None = None
    min_score: float | None = None
    search_options: dict[str, Any] = Field(default_factory=dict)

    _search: Search = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._search = Search.build(
            self.kb,
            self.principal,
            layers=self.layers,
            n_results=self.n_results,
            where=self.where,
            mode=self.mode,
            min_score=self.min_score,
            extra=self.search_options,
        )

    @staticmethod
    def _documents(result: QueryResult) -> list[Document]:
        return [
            Document(page_content=hit.text or "", metadata=hit_metadata(hit), id=hit.id)
            for hit in result.hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self._documents(self._search.run(query))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self._documents(await self._search.arun(query))
