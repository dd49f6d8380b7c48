"""LlamaIndex retriever over osprag's search (``pip install 'osprag[llamaindex]'``).

Use it where the guide builds ``VectorStoreIndex.from_vector_store(ChromaVectorStore(...))``::

    retriever = OspragRetriever(kb, principal=Principal("qm-app", clearance=2))
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm)

Hits become ``NodeWithScore(TextNode(id_=chunk id, text, metadata))``; the node's score is the
calibrated relevance. The ranking scores are left out of the text the LLM sees, the source,
page, section and layer are kept in it so that the model can cite them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from osprag.errors import InvalidInput
from osprag.integrations._common import SCORE_KEYS, Search, hit_metadata, missing_extra, node_score
from osprag.principal import Principal
from osprag.results import QueryResult

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:
    raise ImportError(missing_extra("llamaindex", "llama-index-core")) from exc


__all__ = ["OspragRetriever"]

_HIDDEN = [k for k in SCORE_KEYS if k != "layer"]


class OspragRetriever(BaseRetriever):
    """A LlamaIndex retriever: hybrid search over osprag's layers under one clearance.

    ``kb`` is a local ``KnowledgeBase`` (then ``principal`` is required) or a
    ``RemoteKnowledgeBase`` (the token decides the clearance). ``similarity_top_k`` is
    LlamaIndex's name for ``n_results``; further keyword arguments are ``KnowledgeBase.query``
    options (alpha, where_document, include_history, route_tags, expand, layer_min).
    """

    def __init__(
        self,
        kb: Any,
        *,
        principal: Principal | None = None,
        layers: str | Sequence[str] | None = None,
        n_results: int | None = None,
        similarity_top_k: int | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str | None = None,
        min_score: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **search_options: Any,
    ) -> None:
        if n_results is not None and similarity_top_k is not None and n_results != similarity_top_k:
            raise InvalidInput(
                f"n_results={n_results} and similarity_top_k={similarity_top_k} disagree",
                hint="pass one of them",
            )
        self.search = Search.build(
            kb,
            principal,
            layers=layers,
            n_results=n_results or similarity_top_k or 5,
            where=where,
            mode=mode,
            min_score=min_score,
            extra=search_options,
        )
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @staticmethod
    def _nodes(result: QueryResult) -> list[NodeWithScore]:
        return [
            NodeWithScore(
                node=TextNode(
                    id_=hit.id,
                    text=hit.text or "",
                    metadata=hit_metadata(hit),
                    excluded_llm_metadata_keys=list(_HIDDEN),
                    excluded_embed_metadata_keys=list(_HIDDEN),
                ),
                score=node_score(hit),
            )
            for hit in result.hits
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(self.search.run(query_bundle.query_str))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(await self.search.arun(query_bundle.query_str))
