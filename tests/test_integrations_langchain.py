"""The LangChain retriever with the real langchain_core: Documents, options, a runnable chain."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from osprag import LOCAL, InvalidInput, KnowledgeBase, Settings
from osprag.client import RemoteKnowledgeBase
from osprag.integrations.langchain import OspragRetriever

from .integration_corpus import CRIMP_TEXT, QUESTION, READER, SECRET_ID, fill, serve_in_thread
from .server_helpers import token_value


@pytest.fixture
def storage() -> str:
    """Embedded only: the server mode of the same search is covered by the LlamaIndex test."""
    return "embedded"


@pytest.fixture
def filled(kb: KnowledgeBase) -> KnowledgeBase:
    fill(kb)
    return kb


def test_documents_under_clearance(filled: KnowledgeBase) -> None:
    admin = OspragRetriever(kb=filled, principal=LOCAL, k=4)
    assert SECRET_ID in [d.id for d in admin.invoke(QUESTION)]
    docs = OspragRetriever(kb=filled, principal=READER, k=4).invoke(QUESTION)
    assert all(isinstance(d, Document) for d in docs)
    assert [d.id for d in docs][0] == "k-crimp" and SECRET_ID not in [d.id for d in docs]
    top = docs[0]
    assert top.page_content == CRIMP_TEXT
    assert top.metadata["source"] == "AA-Crimp.pdf" and top.metadata["page"] == 3
    assert top.metadata["layer"] == "kern" and 0 <= top.metadata["relevance"] <= 1
    assert top.metadata["rank"] == 1
    # A chain formats sources for a prompt; async goes through the same search.
    chain = OspragRetriever(kb=filled, principal=READER, n_results=1) | RunnableLambda(
        lambda ds: "\n".join(f"[{d.metadata['source']} S. {d.metadata['page']}]" for d in ds)
    )
    assert chain.invoke(QUESTION) == "[AA-Crimp.pdf S. 3]"
    again = asyncio.run(OspragRetriever(kb=filled, principal=READER, k=4).ainvoke(QUESTION))
    assert [d.id for d in again] == [d.id for d in docs]


def test_options_and_bad_configuration(filled: KnowledgeBase) -> None:
    only_ext = OspragRetriever(kb=filled, principal=LOCAL, layers=["erweitert"], mode="lexical")
    assert [d.id for d in only_ext.invoke("Crimphöhe")] == ["e-vda"]
    where = OspragRetriever(kb=filled, principal=LOCAL, where={"source": "8D-Leitfaden.docx"})
    assert [d.id for d in where.invoke("Reklamation")] == ["k-8d"]
    hist = OspragRetriever(kb=filled, principal=READER, search_options={"include_history": True})
    assert SECRET_ID not in [d.id for d in hist.invoke(QUESTION)]
    with pytest.raises(InvalidInput, match="principal"):
        OspragRetriever(kb=filled)
    with pytest.raises(InvalidInput, match="unsupported search option"):
        OspragRetriever(kb=filled, principal=READER, search_options={"principal": LOCAL})
    with pytest.raises(InvalidInput, match="n_results"):
        OspragRetriever(kb=filled, principal=READER, k=0)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "osprag.integrations.langchain", raising=False)
    monkeypatch.setitem(sys.modules, "langchain_core.retrievers", None)
    with pytest.raises(ImportError, match=r"pip install 'osprag\[langchain\]'"):
        importlib.import_module("osprag.integrations.langchain")


def test_remote_retriever_through_a_real_server(
    filled: KnowledgeBase, settings: Settings, tmp_path: Path
) -> None:
    with (
        serve_in_thread(filled, settings, tmp_path) as url,
        RemoteKnowledgeBase(url, token=token_value("reader2")) as remote,
    ):
        retriever = OspragRetriever(kb=remote, k=4)
        docs = retriever.invoke(QUESTION)
        assert docs[0].id == "k-crimp" and SECRET_ID not in [d.id for d in docs]
        assert docs[0].metadata["source"] == "AA-Crimp.pdf"
        assert [d.id for d in asyncio.run(retriever.ainvoke(QUESTION))] == [d.id for d in docs]
