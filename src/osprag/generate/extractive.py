"""The answer without a language model: the sources' best sentences, verbatim, each cited.

Used when no LLM is configured (or asked for), and as the fallback when the LLM fails. Nothing
here writes a claim of its own: the only words not copied from a chunk are a fixed lead-in
line. Sentences are scored with the lexical leg's analyzer (same stemming, umlaut folding and
compound pieces as the BM25 index), by the share of the question's term weight they contain,
weighted by the hit's calibrated relevance so a strong hit's sentence wins a tie.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from osprag.results import Hit
from osprag.search.analysis import Analyzer, detect_language

MAX_SENTENCES = 3
MAX_PER_SOURCE = 2
MIN_TOKENS = 3
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[\"„“(\[]?[A-ZÄÖÜ0-9])")
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+")

LEAD: dict[str, str] = {
    "de": "Die passendsten Stellen aus den Quellen (ohne Sprachmodell, wörtlich zitiert):",
    "en": "The most relevant passages from the sources (no language model, quoted verbatim):",
}

_analyzer: Analyzer | None = None


def _get_analyzer() -> Analyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = Analyzer()
    return _analyzer


@dataclass(frozen=True)
class Sentence:
    n: int  # source number (1-based position in the hits)
    position: int
    text: str
    score: float


def sentences(text: str) -> list[str]:
    """Sentences and list items of a chunk, whitespace collapsed, bullets stripped."""
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        out.extend(" ".join(s.split()) for s in _SENTENCE.split(line) if s.strip())
    return out


def _is_heading(sentence: str, hit: Hit) -> bool:
    section = str(hit.metadata.get("section") or "")
    title = str(hit.metadata.get("title") or "")
    return bool(sentence) and (sentence in section or sentence == title)


def best_sentences(
    question: str, hits: Sequence[Hit], limit: int = MAX_SENTENCES
) -> list[Sentence]:
    """The top sentences over all hits by weighted question-term coverage; none scoring zero."""
    analyzer = _get_analyzer()
    terms = analyzer.query(question).by_language
    scored: list[Sentence] = []
    for n, hit in enumerate(hits, 1):
        text = hit.text or ""
        given = hit.metadata.get("language")
        lang = given if given in terms else detect_language(text)
        weights = terms.get(lang) or {}
        total = sum(weights.values())
        if not total:
            continue
        prior = 0.5 + 0.5 * (hit.relevance if hit.relevance is not None else 0.5)
        for position, sentence in enumerate(sentences(text)):
            if len(analyzer.tokens(sentence)) < MIN_TOKENS or _is_heading(sentence, hit):
                continue
            present = set(analyzer.document_terms(sentence, lang))
            covered = sum(w for t, w in weights.items() if t in present)
            if covered > 0:
                scored.append(Sentence(n, position, sentence, prior * covered / total))
    scored.sort(key=lambda s: (-s.score, s.n, s.position))
    chosen: list[Sentence] = []
    per_source: dict[int, int] = {}
    for s in scored:
        if per_source.get(s.n, 0) >= MAX_PER_SOURCE or any(c.text == s.text for c in chosen):
            continue
        chosen.append(s)
        per_source[s.n] = per_source.get(s.n, 0) + 1
        if len(chosen) == limit:
            break
    return chosen


def extractive_answer(
    question: str, hits: Sequence[Hit], language: str = "de", limit: int = MAX_SENTENCES
) -> tuple[str, list[int]]:
    """(answer text, cited source numbers): a lead-in line and one cited sentence per bullet."""
    chosen = best_sentences(question, hits, limit)
    if not chosen:
        return "", []
    lines = [LEAD.get(language, LEAD["en"])]
    lines += [f"- {s.text} [{s.n}]" for s in chosen]
    return "\n".join(lines), list(dict.fromkeys(s.n for s in chosen))
