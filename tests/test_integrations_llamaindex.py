"""The LlamaIndex retriever inside a real ``RetrieverQueryEngine`` (LlamaIndex's MockLLM echoes
the prompt, so the test sees exactly what an LLM would be given)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from osprag import LOCAL, InvalidInput, KnowledgeBase, Settings
from osprag.client import RemoteKnowledgeBase
from osprag.integrations.llamaindex import OspragRetriever

from .integration_corpus import (
    CRIMP_TEXT,
    QUESTION,
    READER,
    SECRET_ID,
    SECRET_TEXT,
    fill,
    serve_in_thread,
)
from .server_helpers import token_value


@pytest.fixture
def filled(kb: KnowledgeBase) -> KnowledgeBase:
    fill(kb)
    return kb


def test_query_engine_gets_cited_sources_under_clearance(filled: KnowledgeBase) -> None:
    # The secret chunk matches for everyone allowed to see it ...
    admin = OspragRetriever(filled, principal=LOCAL, similarity_top_k=4)
    assert SECRET_ID in [n.node.node_id for n in admin.retrieve(QUESTION)]
    # ... and never reaches the engine (nor the prompt) for a clearance-2 principal.
    engine = RetrieverQueryEngine.from_args(
        OspragRetriever(filled, principal=READER, similarity_top_k=4), llm=MockLLM()
    )
    response = engine.query(QUESTION)
    ids = [n.node.node_id for n in response.source_nodes]
    assert SECRET_ID not in ids and ids[0] == "k-crimp"
    assert set(ids) <= {"k-crimp", "k-8d", "e-vda"}
    top = response.source_nodes[0]
    meta = top.node.metadata
    assert meta["source"] == "AA-Crimp.pdf" and meta["page"] == 3
    assert meta["section"] == "4.2 Crimphöhe" and meta["layer"] == "kern"
    assert top.score == meta["relevance"] and 0 <= top.score <= 1
    prompt = str(response)  # MockLLM without max_tokens answers with its prompt
    assert CRIMP_TEXT in prompt and "source: AA-Crimp.pdf" in prompt and "layer: kern" in prompt
    assert SECRET_TEXT not in prompt and "Nordwerk" not in prompt
    assert "relevance:" not in prompt  # ranking figures are not LLM context


@pytest.mark.parametrize("storage", ["embedded"])
def test_options_reach_the_search(filled: KnowledgeBase) -> None:
    only_ext = OspragRetriever(filled, principal=LOCAL, layers="erweitert", mode="lexical")
    assert [n.node.node_id for n in only_ext.retrieve("Crimphöhe")] == ["e-vda"]
    filtered = OspragRetriever(
        filled, principal=LOCAL, n_results=2, where={"source": "8D-Leitfaden.docx"}
    )
    assert [n.node.node_id for n in filtered.retrieve("Reklamation")] == ["k-8d"]
    top1 = OspragRetriever(filled, principal=READER, similarity_top_k=1, mode="dense")
    nodes = asyncio.run(top1.aretrieve(QUESTION))
    assert [n.node.node_id for n in nodes] == ["k-crimp"]
    strict = OspragRetriever(filled, principal=READER, min_score=0.999)
    assert strict.retrieve("Wetterbericht Karibik") == []


@pytest.mark.parametrize("storage", ["embedded"])
def test_bad_configuration_fails_when_built(filled: KnowledgeBase) -> None:
    with pytest.raises(InvalidInput, match="principal"):
        OspragRetriever(filled)  # no silent clearance 4
    with pytest.raises(InvalidInput, match="unsupported search option"):
        OspragRetriever(filled, principal=READER, similarty_top_k=3)
    with pytest.raises(InvalidInput, match="disagree"):
        OspragRetriever(filled, principal=READER, n_results=3, similarity_top_k=4)
    with pytest.raises(InvalidInput, match="KnowledgeBase or RemoteKnowledgeBase"):
        OspragRetriever(object(), principal=READER)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "osprag.integrations.llamaindex", raising=False)
    monkeypatch.setitem(sys.modules, "llama_index.core.retrievers", None)
    with pytest.raises(ImportError, match=r"pip install 'osprag\[llamaindex\]'"):
        importlib.import_module("osprag.integrations.llamaindex")


@pytest.mark.parametrize("storage", ["embedded"])
def test_remote_retriever_through_a_real_server(
    filled: KnowledgeBase, settings: Settings, tmp_path: Path
) -> None:
    with (
        serve_in_thread(filled, settings, tmp_path) as url,
        RemoteKnowledgeBase(url, token=token_value("reader2")) as remote,
    ):
        retriever = OspragRetriever(remote, similarity_top_k=4)
        engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
        response = engine.query(QUESTION)
        ids = [n.node.node_id for n in response.source_nodes]
        assert ids[0] == "k-crimp" and SECRET_ID not in ids
        assert response.source_nodes[0].node.metadata["page"] == 3
        assert SECRET_TEXT not in str(response)
        nodes = asyncio.run(retriever.aretrieve(QUESTION))
        assert [n.node.node_id for n in nodes] == ids
        with pytest.raises(InvalidInput, match="no principal"):
            OspragRetriever(remote, principal=LOCAL)  # the token decides, not the caller
