"""Answers end to end: real Chroma, real MiniLM, and a real OpenAI-compatible server process
(tests/fake_llm_server.py) that answers well, cites sources it was not given, invents quotes,
hangs, fails with 500 — osprag must catch each and still hand back the sources."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from osprag import KnowledgeBase, Principal, Settings
from osprag.cli import main
from osprag.config import LLMSettings
from osprag.embedding import Embedder
from osprag.generate import Answer, LLMClient, condense, sources_markdown
from osprag.generate.answerer import LLM_BROKE_OFF, LLM_DOWN
from osprag.generate.citations import FLAG
from tests.conftest import base_settings

BASE_URL = "https://dms.example.com/qm docs"
DOCS = [
    (
        "Crimpen > Crimphöhe\nDie Crimphöhe ist bei jedem Rüsten und alle 500 Teile mit dem "
        "Crimphöhenmessgerät zu messen. Für 0,35 mm² beträgt die Crimphöhe 0,75 mm ± 0,03 mm.",
        {
            "source": "AA/AA-12 Crimpen.pdf",
            "title": "AA-12 Crimpen",
            "page": 3,
            "section": "Crimpen > Crimphöhe",
            "version": "2.1",
            "access_level": 1,
        },
    ),
    (
        "Crimpen > Abzugskraft\nDie Abzugskraft wird einmal pro Schicht geprüft. Für 0,5 mm² "
        "gilt eine Mindestabzugskraft von 60 N.",
        {
            "source": "AA/AA-12 Crimpen.pdf",
            "title": "AA-12 Crimpen",
            "page": 4,
            "section": "Crimpen > Abzugskraft",
            "version": "2.1",
            "access_level": 1,
        },
    ),
    (
        "Lenkungsplan Spritzguss: Die Maßprüfung der Gehäuse erfolgt stündlich mit dem "
        "Messschieber. Reaktionsplan: Sperren und 8D einleiten.",
        {
            "source": "LP/Lenkungsplan Spritzguss.xlsx",
            "title": "Lenkungsplan Spritzguss",
            "sheet": "LP",
            "row_start": 5,
            "row_end": 7,
            "access_level": 1,
        },
    ),
    (
        "The supplier must notify the customer of any process change in writing at least "
        "30 days in advance. PPAP resubmission is required.",
        {
            "source": "ext/Supplier Manual.pdf",
            "title": "Supplier Manual",
            "page": 12,
            "language": "en",
            "access_level": 1,
        },
    ),
    (
        "Geheim: Die Abzugskraft des Prototyps X9 wird nur im Sonderlabor geprüft.",
        {"source": "geheim/X9.pdf", "title": "X9 Prototyp", "access_level": 4},
    ),
]
MIN_SCORE = 0.5  # the tiny corpus' on-topic hits score 0.8-0.95, off-topic ones below 0.05
QUESTION = "Wie oft muss die Crimphöhe gemessen werden?"


def _requests(llm_url: str, model: str) -> int:
    counts = httpx.get(llm_url.removesuffix("/v1") + "/stats").json()
    return int(counts.get(model, 0))


def _client(llm_url: str, model: str, **kw: object) -> LLMClient:
    values: dict[str, object] = {"url": llm_url, "model": model, "timeout": 1.0, "retries": 0}
    values.update(kw)
    return LLMClient(LLMSettings(**values))  # type: ignore[arg-type]


def _fill(kb: KnowledgeBase) -> None:
    kb.add("kern", [t for t, _ in DOCS], metadatas=[m for _, m in DOCS])


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, llm_url: str
) -> Iterator[KnowledgeBase]:
    """One small embedded corpus shared by the module (answers only read it)."""
    settings = base_settings(
        tmp_path_factory.mktemp("answers"),
        storage="embedded",
        answer_min_score=MIN_SCORE,
        llm=LLMSettings(url=llm_url, model="good", timeout=1.0, retries=0),
        server={"source_base_url": BASE_URL},
    )
    kb = KnowledgeBase.open(settings, embedder=embedder)
    _fill(kb)
    try:
        yield kb
    finally:
        kb.close()


def _check_citations(result: Answer) -> None:
    """What the issue asks: each [n] points at a retrieved chunk that contains the cited text."""
    ids = [h.id for h in result.sources]
    for c in result.citations:
        assert f"[{c.n}" in result.text or f", {c.n}]" in result.text
        assert ids[c.n - 1] == c.id
        if c.quote:
            assert c.quote.lower() in (result.sources[c.n - 1].text or "").lower()


def test_good_answer_cites_file_page_and_link(
    settings: Settings, embedder: Embedder, llm_url: str
) -> None:
    settings = settings.model_copy(
        update={
            "answer_min_score": MIN_SCORE,
            "llm": LLMSettings(url=llm_url, model="good", timeout=2.0, retries=0),
            "server": settings.server.model_copy(update={"source_base_url": BASE_URL}),
        }
    )
    with KnowledgeBase.open(settings, embedder=embedder) as kb:
        _fill(kb)
        result = kb.answer(QUESTION)
    assert result.mode == "llm" and not result.refused and result.language == "de"
    assert result.sources[0].metadata["page"] == 3
    assert [c.n for c in result.citations] == [1, 2]
    first = result.citations[0]
    assert first.source == "AA/AA-12 Crimpen.pdf" and first.page == 3 and first.layer == "kern"
    assert first.section == "Crimpen > Crimphöhe" and first.version == "2.1"
    assert first.url == "https://dms.example.com/qm docs/AA/AA-12%20Crimpen.pdf#page=3"
    assert first.quote and first.quote in result.text
    _check_citations(result)
    assert result.warnings == [] and result.removed_citations == []
    data = json.loads(json.dumps(result.to_dict()))
    assert data["citations"][0]["n"] == 1 and data["sources"][0]["n"] == 1
    md = sources_markdown(result).splitlines()
    assert md[0] == "**Quellen**" and len(md) == 4
    assert md[2] == (
        "- \\[1\\] AA-12 Crimpen — AA/AA-12 Crimpen.pdf, S. 3, § Crimpen > Crimphöhe, Rev. 2.1, "
        "layer kern ([Öffnen](<" + first.url + ">))"
    )


def test_stream_events_match_the_plain_answer(corpus: KnowledgeBase) -> None:
    events = list(corpus.answer_stream(QUESTION))
    assert [e.type for e in events[:2]] == ["sources", "delta"] and events[-1].type == "done"
    assert {e.type for e in events[1:-1]} == {"delta"} and len(events) > 4
    final = events[-1].answer
    assert final is not None
    assert "".join(e.text for e in events if e.type == "delta") == final.text
    assert final.text == corpus.answer(QUESTION).text
    assert json.loads(json.dumps(events[0].to_dict()))["sources"][0]["n"] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_adversarial_llm_is_caught(corpus: KnowledgeBase, llm_url: str, stream: bool) -> None:
    client = _client(llm_url, "adversarial")
    if stream:
        events = list(corpus.answer_stream(QUESTION, llm=client))
        shown = "".join(e.text for e in events if e.type == "delta")
        result = events[-1].answer
        assert result is not None and shown == result.text
    else:
        result = corpus.answer(QUESTION, llm=client)
    assert "[9]" not in result.text and "7]" not in result.text
    assert result.removed_citations == [9, 7]
    assert "„Crimphöhen werden niemals gemessen“ " + FLAG["de"] in result.text
    assert "[2]" not in result.text
    assert [c.n for c in result.citations] == [1]  # [2] was only given for the invented quote
    assert result.quotes[0]["verified"] is False
    assert any("not in that source" in w for w in result.warnings)
    _check_citations(result)


def test_a_quoted_title_is_no_invention(corpus: KnowledgeBase, llm_url: str) -> None:
    result = corpus.answer(QUESTION, llm=_client(llm_url, "title"))
    assert result.text == "Die Arbeitsanweisung „AA-12 Crimpen“ [1] regelt das Messen [1]."
    assert result.warnings == [] and result.quotes[0]["verified"]
    assert [(c.n, c.quote) for c in result.citations] == [(1, None)]  # not the chunk's text


def test_llm_that_hangs_times_out_and_sources_remain(corpus: KnowledgeBase, llm_url: str) -> None:
    started = time.monotonic()
    result = corpus.answer(QUESTION, llm=_client(llm_url, "hang", timeout=1.0))
    assert time.monotonic() - started < 8
    assert result.mode == "extractive" and result.sources and result.citations
    assert result.llm is not None and result.llm["error"]["code"] == "llm_unavailable"
    assert result.text.startswith(LLM_DOWN["de"].split("(")[0])
    assert "Crimphöhe ist bei jedem Rüsten" in result.text
    _check_citations(result)


def test_500s_are_retried_then_reported(corpus: KnowledgeBase, llm_url: str) -> None:
    before = _requests(llm_url, "error500")
    result = corpus.answer(QUESTION, llm=_client(llm_url, "error500", retries=2))
    assert _requests(llm_url, "error500") - before == 3
    assert result.llm_failed and "HTTP 500" in result.llm["error"]["message"]  # type: ignore[index]
    flaky = corpus.answer(QUESTION, llm=_client(llm_url, "flaky", retries=1))
    assert flaky.mode == "llm" and not flaky.llm_failed


def test_stream_that_stalls_keeps_what_was_checked(corpus: KnowledgeBase, llm_url: str) -> None:
    events = list(corpus.answer_stream(QUESTION, llm=_client(llm_url, "hang-mid")))
    result = events[-1].answer
    assert result is not None and result.llm_failed
    assert result.text.startswith("Laut Arbeitsanweisung gilt")
    broke_off = LLM_BROKE_OFF["de"].split("(")[0]
    assert result.text.endswith(").]") and "\n\n" + broke_off in result.text
    assert result.citations == []  # the stall came inside a quote, before its [1]
    assert "".join(e.text for e in events if e.type == "delta") == result.text


def test_api_key_is_sent_and_a_4xx_is_not_retried(corpus: KnowledgeBase, llm_url: str) -> None:
    ok = corpus.answer(QUESTION, llm=_client(llm_url, "keyed", api_key="sk-test"))
    assert ok.mode == "llm"
    before = _requests(llm_url, "keyed")
    denied = corpus.answer(QUESTION, llm=_client(llm_url, "keyed", retries=3))
    assert _requests(llm_url, "keyed") - before == 1
    assert denied.llm is not None and denied.llm["error"]["code"] == "llm_error"
    assert "401" in denied.llm["error"]["message"]
    dumped = json.dumps(denied.to_dict())
    assert "sk-test" not in dumped and "127.0.0.1" not in dumped


@pytest.mark.parametrize(
    ("model", "stream"), [("garbage", False), ("garbage", True), ("empty", True)]
)
def test_unusable_replies_fall_back(
    corpus: KnowledgeBase, llm_url: str, model: str, stream: bool
) -> None:
    client = _client(llm_url, model, retries=2)
    before = _requests(llm_url, model)
    if stream:
        result = list(corpus.answer_stream(QUESTION, llm=client))[-1].answer
    else:
        result = corpus.answer(QUESTION, llm=client)
    assert result is not None and result.mode == "extractive" and result.citations
    assert result.llm is not None and result.llm["error"]["code"] == "llm_error"
    assert _requests(llm_url, model) - before == 1  # not retried: it would answer the same


@pytest.mark.parametrize(
    ("question", "phrase"),
    [
        ("Wie backe ich einen Apfelkuchen?", "keine Stelle"),
        ("Who won the 1954 World Cup?", "no passage"),
    ],
)
def test_refusal_without_calling_the_llm(
    corpus: KnowledgeBase, llm_url: str, question: str, phrase: str
) -> None:
    before = _requests(llm_url, "good")
    result = corpus.answer(question)
    assert result.refused and result.reason == "below_threshold" and result.mode == "refused"
    assert phrase in result.text and result.citations == []
    assert _requests(llm_url, "good") == before


def test_extractive_answer_and_clearance(corpus: KnowledgeBase) -> None:
    reader = Principal("reader", clearance=1)
    question = "Wo wird die Abzugskraft des Prototyps X9 geprüft?"
    secret = corpus.answer(question, use_llm=False, min_score=0.0)
    assert any("X9" in (h.text or "") for h in secret.sources)
    result = corpus.answer(question, use_llm=False, min_score=0.0, principal=reader)
    assert result.mode == "extractive" and result.llm is None
    assert all(h.metadata["access_level"] == 1 for h in result.sources)
    assert "X9" not in result.text and "Sonderlabor" not in result.text
    for line in result.text.splitlines()[1:]:
        sentence, n = line[2:].rsplit(" [", 1)
        assert sentence in (result.sources[int(n.rstrip("]")) - 1].text or "")
    _check_citations(result)


def test_condense_with_the_llm_and_without(llm_url: str) -> None:
    convo = [
        {"role": "user", "content": "Welche Crimphöhe gilt für 0,35 mm²?"},
        {"role": "assistant", "content": "0,75 mm [1]"},
        {"role": "user", "content": "und bei dickeren Leitungen?"},
    ]
    assert condense(convo, _client(llm_url, "condense")) == "Welche Crimphöhe gilt für 0,5 mm²?"
    fallback = condense(convo, _client(llm_url, "error500"))
    assert fallback == "Crimphöhe gilt 0,35 mm² bei dickeren Leitungen?"


@pytest.fixture
def osp(
    corpus: KnowledgeBase,
    llm_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OSP_DATA_DIR", str(corpus.settings.data_dir))
    monkeypatch.setenv("OSP_CACHE_DIR", str(corpus.settings.cache_dir))
    monkeypatch.setenv("OSP_EMBEDDING_BACKEND", "torch")
    monkeypatch.setenv("OSP_LLM__URL", llm_url)
    monkeypatch.setenv("OSP_LLM__TIMEOUT", "1")
    monkeypatch.setenv("OSP_LLM__RETRIES", "0")
    monkeypatch.setenv("OSP_SERVER__SOURCE_BASE_URL", BASE_URL)

    def run(*args: str, model: str = "good") -> tuple[int, str, str]:
        monkeypatch.setenv("OSP_LLM__MODEL", model)
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_osp_ask(osp) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = osp("ask", QUESTION)
    assert code == 0
    assert out.startswith("Laut Arbeitsanweisung gilt: „")
    line = "*[1] AA-12 Crimpen — AA/AA-12 Crimpen.pdf, S. 3, § Crimpen > Crimphöhe, Rev. 2.1, "
    assert line + "layer kern  (relevance 0." in out
    assert "\n     https://dms.example.com/qm docs/AA/AA-12%20Crimpen.pdf#page=3\n" in out
    code, out, err = osp("ask", QUESTION, model="adversarial")
    assert code == 0 and "[9]" not in out and FLAG["de"] in out and "warning" in err
    code, out, _ = osp("ask", "--json", "--no-llm", QUESTION)
    data = json.loads(out)
    assert code == 0 and data["mode"] == "extractive" and data["citations"][0]["page"] == 3
    x9 = "Wo wird die Abzugskraft des Prototyps X9 geprüft?"
    assert "X9" in osp("ask", "--no-llm", "--min-score", "0", x9)[1]
    assert "X9" not in osp("ask", "--no-llm", "--min-score", "0", "--clearance", "1", x9)[1]
    code, out, _ = osp("ask", QUESTION, model="error500")
    assert code == 11 and "nicht verfügbar" in out and "[1] AA-12 Crimpen" in out
    code, out, err = osp("ask", "   ")
    assert code == 4 and "non-empty" in err
