"""Retrieve → refuse or prompt → generate → check citations: ``answer`` and ``answer_stream``.

The order of decisions is the point of this module:

1. Retrieval runs under the caller's principal, so the model only ever sees chunks the caller
   may read.
2. No hit's calibrated relevance reaches ``answer_min_score`` → a refusal in the question's
   language, without calling the model (it would answer from its own memory).
3. No LLM configured (or ``use_llm=False``) → the extractive answer (verbatim sentences).
4. The LLM's text is checked (``citations.py``) before anyone sees it: unknown ``[n]`` removed,
   invented quotes flagged; in the stream, only the checked, stable prefix is sent.
5. LLM down, timing out or failing → the sources, a clear message and the extractive answer;
   never an exception for that (store errors and bad input still raise as usual).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from osprag.errors import InvalidInput, LLMError
from osprag.generate.citations import CheckedText, check_citations, quote_in, stable_end
from osprag.generate.extractive import extractive_answer
from osprag.generate.llm import LLMClient
from osprag.generate.prompt import Language, build_messages, question_language, source_header
from osprag.principal import LOCAL, Principal
from osprag.results import Hit

if TYPE_CHECKING:
    from osprag.knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)
Mode = Literal["llm", "extractive", "refused"]

_CITATION_KEYS = (
    "source",
    "title",
    "page",
    "page_end",
    "sheet",
    "row_start",
    "row_end",
    "slide",
    "section",
    "version",
    "status",
    "doc_type",
)

REFUSAL: dict[str, str] = {
    "de": (
        "Dazu finde ich in den Quellen keine Stelle, die die Frage verlässlich beantwortet "
        "(beste Übereinstimmung {best:.2f}, Schwelle {threshold:.2f}). Bitte formulieren Sie "
        "die Frage genauer oder prüfen Sie die Dokumente direkt."
    ),
    "en": (
        "I found no passage in the sources that reliably answers this question (best match "
        "{best:.2f}, threshold {threshold:.2f}). Please ask more specifically or check the "
        "documents directly."
    ),
}
NO_HITS: dict[str, str] = {
    "de": "Dazu finde ich in den Quellen nichts. Bitte formulieren Sie die Frage anders.",
    "en": "I found nothing in the sources on this. Please rephrase the question.",
}
LLM_DOWN: dict[str, str] = {
    "de": "Das Sprachmodell ist gerade nicht verfügbar ({error}).",
    "en": "The language model is not available right now ({error}).",
}
LLM_BROKE_OFF: dict[str, str] = {
    "de": "[Antwort abgebrochen: das Sprachmodell antwortete nicht weiter ({error}).]",
    "en": "[Answer cut off: the language model stopped responding ({error}).]",
}
SEE_SOURCES: dict[str, str] = {
    "de": "Die gefundenen Quellen stehen unten.",
    "en": "The sources found are listed below.",
}


@dataclass
class Citation:
    """One ``[n]`` the answer uses, resolved to the place in the original file."""

    n: int
    id: str
    layer: str
    source: str | None = None
    title: str | None = None
    page: int | None = None
    page_end: int | None = None
    sheet: str | None = None
    row_start: int | None = None
    row_end: int | None = None
    slide: int | None = None
    section: str | None = None
    version: str | None = None
    status: str | None = None
    doc_type: str | None = None
    url: str | None = None
    quote: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Answer:
    """An answer with checked citations; ``to_dict()`` is the JSON of the CLI and the API."""

    question: str
    text: str
    language: Language
    mode: Mode
    citations: list[Citation] = field(default_factory=list)
    sources: list[Hit] = field(default_factory=list)
    refused: bool = False
    reason: str | None = None
    llm: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    removed_citations: list[int] = field(default_factory=list)
    quotes: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def llm_failed(self) -> bool:
        return bool(self.llm and self.llm.get("error"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; names no host or key (LLM errors carry their message without the hint)."""
        return {
            "question": self.question,
            "answer": self.text,
            "language": self.language,
            "mode": self.mode,
            "refused": self.refused,
            "reason": self.reason,
            "citations": [c.to_dict() for c in self.citations],
            "sources": [{"n": n, **h.to_dict()} for n, h in enumerate(self.sources, 1)],
            "llm": self.llm,
            "warnings": self.warnings,
            "removed_citations": self.removed_citations,
            "quotes": self.quotes,
            "timings_ms": self.timings_ms,
        }


@dataclass
class AnswerEvent:
    """One step of a streamed answer: ``sources`` first, then ``delta``s, then ``done``.

    The deltas concatenate to ``done``'s ``answer.text`` (the checked text); ``done`` carries
    the citations and is the authority should the two ever differ (then a warning says so).
    """

    type: Literal["sources", "delta", "done"]
    text: str = ""
    sources: list[Hit] | None = None
    answer: Answer | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.type == "delta":
            return {"type": "delta", "text": self.text}
        if self.type == "sources":
            hits = self.sources or []
            return {
                "type": "sources",
                "sources": [{"n": n, **h.to_dict()} for n, h in enumerate(hits, 1)],
            }
        assert self.answer is not None
        return {"type": "done", "answer": self.answer.to_dict()}


# ----------------------------------------------------------------- citations


def source_url(base: str | None, meta: Mapping[str, Any]) -> str | None:
    """Link to the original: base URL + url-quoted relative path (+ ``#page=N`` for PDFs)."""
    source = meta.get("source")
    if not base or not isinstance(source, str) or not source:
        return None
    url = f"{base.rstrip('/')}/{quote(source.lstrip('/'), safe='/')}"
    page = meta.get("page")
    if isinstance(page, int) and source.lower().endswith(".pdf"):
        url += f"#page={page}"
    return url


def make_citation(n: int, hit: Hit, base_url: str | None, quote_text: str | None) -> Citation:
    meta = hit.metadata
    values: dict[str, Any] = {}
    for key in _CITATION_KEYS:
        value = meta.get(key)
        if value is not None:
            values[key] = str(value) if key in ("version", "sheet") else value
    return Citation(
        n=n,
        id=hit.id,
        layer=hit.layer,
        url=source_url(base_url, meta),
        quote=quote_text,
        **values,
    )


def _citations(checked: CheckedText, hits: Sequence[Hit], base_url: str | None) -> list[Citation]:
    out = []
    for n in checked.cited:
        text = hits[n - 1].text or ""
        # the first verified quote that is in the chunk's text (a quoted title is true, too)
        quote_text = next(
            (q.text for q in checked.quotes if n in q.found_in and quote_in(q.text, text)), None
        )
        out.append(make_citation(n, hits[n - 1], base_url, quote_text))
    return out


def _seen(hits: Sequence[Hit], language: Language) -> list[str]:
    """Each source as the model saw it (header and text): a quoted title is no invention."""
    return [f"{source_header(n, h, language)}\n{h.text or ''}" for n, h in enumerate(hits, 1)]


# ----------------------------------------------------------------- the pipeline


@dataclass
class _Prepared:
    question: str
    language: Language
    hits: list[Hit]
    best: float
    threshold: float
    client: LLMClient | None
    owns_client: bool
    base_url: str | None
    started: float
    retrieve_ms: float

    @property
    def refused(self) -> bool:
        return not self.hits or self.best < self.threshold

    def answer(self, text: str, mode: Mode, **kw: Any) -> Answer:
        result = Answer(question=self.question, text=text, language=self.language, mode=mode, **kw)
        result.sources = self.hits
        result.timings_ms = {
            "retrieve": round(self.retrieve_ms, 1),
            "total": round((time.perf_counter() - self.started) * 1000, 1),
        }
        return result

    def close(self) -> None:
        if self.owns_client and self.client is not None:
            self.client.close()


def _prepare(
    kb: KnowledgeBase,
    question: str,
    *,
    principal: Principal,
    layers: str | Sequence[str] | None,
    where: Mapping[str, Any] | None,
    n_sources: int | None,
    min_score: float | None,
    language: Language | None,
    use_llm: bool,
    llm: LLMClient | None,
    query_options: Mapping[str, Any] | None,
) -> _Prepared:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("the question must be a non-empty string")
    question = question.strip()
    started = time.perf_counter()
    n = n_sources if n_sources is not None else kb.settings.llm.sources
    result = kb.query(
        question,
        layers=layers,
        where=where,
        n_results=n,
        principal=principal,
        **dict(query_options or {}),
    )
    retrieve_ms = (time.perf_counter() - started) * 1000
    hits = [h for h in result.hits if h.text]
    best = max((h.relevance or 0.0 for h in hits), default=0.0)
    client = llm if use_llm else None
    owns = False
    if use_llm and client is None and kb.settings.llm.url:
        client = LLMClient(kb.settings.llm)
        owns = True
    return _Prepared(
        question=question,
        language=language or question_language(question),
        hits=hits,
        best=best,
        threshold=kb.settings.answer_min_score if min_score is None else float(min_score),
        client=client,
        owns_client=owns,
        base_url=kb.settings.server.source_base_url,
        started=started,
        retrieve_ms=retrieve_ms,
    )


def _refusal(prep: _Prepared) -> Answer:
    lang = prep.language
    if not prep.hits:
        text, reason = NO_HITS[lang], "no_sources"
    else:
        text = REFUSAL[lang].format(best=prep.best, threshold=prep.threshold)
        reason = "below_threshold"
    return prep.answer(text, "refused", refused=True, reason=reason, llm=_llm_info(prep))


def _extractive(prep: _Prepared, lead: str = "", error: LLMError | None = None) -> Answer:
    text, cited = extractive_answer(prep.question, prep.hits, prep.language)
    if not text:
        text = SEE_SOURCES[prep.language]
    body = f"{lead}\n\n{text}" if lead else text
    checked = CheckedText(text=body, cited=cited)
    info = _llm_info(prep)
    warnings = []
    if error is not None and info is not None:
        info["error"] = {"code": error.code, "message": error.message}
        warnings.append(f"LLM failed, extractive answer given: {error.message}")
    return prep.answer(
        body,
        "extractive",
        citations=_citations(checked, prep.hits, prep.base_url),
        llm=info,
        warnings=warnings,
    )


def _llm_info(prep: _Prepared) -> dict[str, Any] | None:
    return prep.client.info() if prep.client is not None else None


def _finish(prep: _Prepared, raw: str, generate_ms: float) -> Answer:
    checked = check_citations(raw, _seen(prep.hits, prep.language), prep.language)
    warnings = list(checked.warnings)
    if not checked.cited:
        warnings.append("the answer cites no source")
    result = prep.answer(
        checked.text,
        "llm",
        citations=_citations(checked, prep.hits, prep.base_url),
        llm=_llm_info(prep),
        warnings=warnings,
        removed_citations=checked.invalid,
        quotes=[q.to_dict() for q in checked.quotes],
    )
    result.timings_ms["generate"] = round(generate_ms, 1)
    return result


def _down(prep: _Prepared, error: LLMError) -> Answer:
    return _extractive(prep, LLM_DOWN[prep.language].format(error=error.message), error)


def answer(
    kb: KnowledgeBase,
    question: str,
    *,
    principal: Principal = LOCAL,
    layers: str | Sequence[str] | None = None,
    where: Mapping[str, Any] | None = None,
    n_sources: int | None = None,
    min_score: float | None = None,
    language: Language | None = None,
    use_llm: bool = True,
    llm: LLMClient | None = None,
    query_options: Mapping[str, Any] | None = None,
) -> Answer:
    """Answer ``question`` from the knowledge base with checked ``[n]`` citations.

    ``n_sources`` chunks (default ``OSP_LLM__SOURCES``) are retrieved under ``principal``;
    ``min_score`` overrides ``OSP_ANSWER_MIN_SCORE``; ``language`` overrides the detected
    one; ``use_llm=False`` forces the extractive answer; ``llm`` reuses a client (a server
    keeps one); ``query_options`` go to ``KnowledgeBase.query`` (mode, alpha, include_history,
    …). ``answer_stream`` takes the same options and yields events instead.
    """
    options: dict[str, Any] = dict(
        principal=principal,
        layers=layers,
        where=where,
        n_sources=n_sources,
        min_score=min_score,
        language=language,
        use_llm=use_llm,
        llm=llm,
        query_options=query_options,
    )
    prep = _prepare(kb, question, **options)
    try:
        if prep.refused:
            return _refusal(prep)
        if prep.client is None:
            return _extractive(prep)
        messages = build_messages(prep.question, prep.hits, prep.language)
        started = time.perf_counter()
        try:
            raw = prep.client.chat(messages)
            if not raw.strip():
                raise LLMError("the LLM returned an empty answer")
        except LLMError as exc:
            return _down(prep, exc)
        return _finish(prep, raw, (time.perf_counter() - started) * 1000)
    finally:
        prep.close()


def answer_stream(
    kb: KnowledgeBase,
    question: str,
    *,
    principal: Principal = LOCAL,
    layers: str | Sequence[str] | None = None,
    where: Mapping[str, Any] | None = None,
    n_sources: int | None = None,
    min_score: float | None = None,
    language: Language | None = None,
    use_llm: bool = True,
    llm: LLMClient | None = None,
    query_options: Mapping[str, Any] | None = None,
) -> Iterator[AnswerEvent]:
    """Like ``answer`` but as events: ``sources``, checked text ``delta``s, then ``done``.

    Retrieval runs (and its errors raise) when the first event is requested.
    """
    prep = _prepare(
        kb,
        question,
        principal=principal,
        layers=layers,
        where=where,
        n_sources=n_sources,
        min_score=min_score,
        language=language,
        use_llm=use_llm,
        llm=llm,
        query_options=query_options,
    )
    try:
        yield AnswerEvent("sources", sources=prep.hits)
        if prep.refused or prep.client is None:
            result = _refusal(prep) if prep.refused else _extractive(prep)
            yield AnswerEvent("delta", text=result.text)
            yield AnswerEvent("done", answer=result)
            return
        yield from _generate_stream(prep, prep.client)
    finally:
        prep.close()


def _generate_stream(prep: _Prepared, client: LLMClient) -> Iterator[AnswerEvent]:
    texts = _seen(prep.hits, prep.language)
    messages = build_messages(prep.question, prep.hits, prep.language)
    started = time.perf_counter()
    raw = ""
    emitted = ""
    error: LLMError | None = None
    try:
        for delta in client.stream(messages):
            raw += delta
            checked = check_citations(raw[: stable_end(raw)], texts, prep.language).text
            if len(checked) > len(emitted) and checked.startswith(emitted):
                yield AnswerEvent("delta", text=checked[len(emitted) :])
                emitted = checked
    except LLMError as exc:
        error = exc
    if error is not None and not raw.strip():
        result = _down(prep, error)
    elif error is None and not raw.strip():
        result = _down(prep, LLMError("the LLM returned an empty answer"))
    else:
        result = _finish(prep, raw, (time.perf_counter() - started) * 1000)
        if error is not None:
            result.text += "\n\n" + LLM_BROKE_OFF[prep.language].format(error=error.message)
            assert result.llm is not None
            result.llm["error"] = {"code": error.code, "message": error.message}
            result.warnings.append(f"LLM stream broke off: {error.message}")
    if result.text.startswith(emitted):
        rest = result.text[len(emitted) :]
        if rest:
            yield AnswerEvent("delta", text=rest)
    else:
        log.warning("streamed answer differs from the checked answer; 'done' has the final text")
        result.warnings.append("the streamed text was corrected at the end; see the final text")
    yield AnswerEvent("done", answer=result)
