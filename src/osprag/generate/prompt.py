"""The prompt: numbered sources, the rules for citing them, in the question's language.

The sources go into the user message, each headed ``[n]`` with its file, page and section, so
that the model can cite the number and the reader can check the place. The rules ask for
verbatim quotes in „…“ directly followed by their ``[n]``: that is the form ``citations.py``
can verify, so asking for it is what makes invented quotes detectable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from osprag.results import Hit
from osprag.search.analysis import detect_language

Language = Literal["de", "en"]
MAX_SOURCE_CHARS = 2500
"""Longest source text put into the prompt; chunks are shorter, hand-added records may not be."""

_UMLAUT = re.compile(r"[äöüßÄÖÜ]")

SYSTEM: dict[Language, str] = {
    "de": (
        "Du beantwortest Fragen zu Qualitätsmanagement-Dokumenten ausschließlich anhand der "
        "nummerierten Quellen, die der Nutzer mitschickt.\n"
        "Regeln:\n"
        "1. Antworte auf Deutsch, knapp und sachlich.\n"
        "2. Belege jede Aussage mit der Nummer ihrer Quelle in eckigen Klammern, z. B. [1] "
        "oder [1, 3]. Verwende nur Nummern aus der Quellenliste.\n"
        "3. Zitiere sparsam; ein Zitat steht wörtlich in „…“ und direkt danach seine Quelle, "
        "z. B. „Die Crimphöhe ist zu messen“ [2].\n"
        "4. Steht die Antwort nicht in den Quellen, sage das, statt zu raten.\n"
        "5. Erfinde keine Werte, Normen oder Dokumentnamen."
    ),
    "en": (
        "You answer questions about quality-management documents using only the numbered "
        "sources the user sends.\n"
        "Rules:\n"
        "1. Answer in English, concisely and factually.\n"
        "2. Support every statement with the number of its source in square brackets, e.g. [1] "
        "or [1, 3]. Use only numbers from the source list.\n"
        '3. Quote sparingly; a quote is verbatim in "…" directly followed by its source, '
        'e.g. "the crimp height shall be measured" [2].\n'
        "4. If the sources do not contain the answer, say so instead of guessing.\n"
        "5. Never invent values, standards or document names."
    ),
}

_USER: dict[Language, tuple[str, str]] = {
    "de": ("Quellen:", "Frage:"),
    "en": ("Sources:", "Question:"),
}


def question_language(text: str) -> Language:
    """de or en for a question: the ingest detector's stopword vote, umlauts count for German.

    A question is short, so a single umlaut decides a tie (the detector alone says German when
    unsure, which is right for this corpus).
    """
    lang = detect_language(text)
    if lang == "en" and _UMLAUT.search(text) and len(text.split()) <= 6:
        return "de"
    return "en" if lang == "en" else "de"


def location(meta: Mapping[str, Any], language: Language = "de") -> str:
    """Where in its file a chunk sits: page (range), sheet and rows, or slide."""
    parts: list[str] = []
    page, page_end = meta.get("page"), meta.get("page_end")
    if page is not None:
        word = "S." if language == "de" else "p."
        parts.append(f"{word} {page}" + (f"–{page_end}" if page_end not in (None, page) else ""))
    if meta.get("sheet") is not None:
        parts.append(("Blatt " if language == "de" else "sheet ") + str(meta["sheet"]))
    row, row_end = meta.get("row_start"), meta.get("row_end")
    if row is not None:
        word = "Zeile" if language == "de" else "row"
        parts.append(f"{word} {row}" + (f"–{row_end}" if row_end not in (None, row) else ""))
    if meta.get("slide") is not None:
        parts.append(("Folie " if language == "de" else "slide ") + str(meta["slide"]))
    return ", ".join(parts)


def place_bits(meta: Mapping[str, Any], language: Language = "de") -> list[str]:
    """Location, section and revision of a chunk, as the prompt and the source lists show them."""
    bits = []
    where = location(meta, language)
    if where:
        bits.append(where)
    if meta.get("section"):
        bits.append(f"§ {meta['section']}")
    if meta.get("version"):
        bits.append(("Rev. " if language == "de" else "rev. ") + str(meta["version"]))
    return bits


def source_header(n: int, hit: Hit, language: Language = "de") -> str:
    """``[n] title — file, p. 3, § section (rev 2.1)``: what the model (and the reader) sees."""
    meta = hit.metadata
    title = str(meta.get("title") or meta.get("source") or hit.id)
    bits = [str(meta["source"])] if meta.get("source") and meta.get("source") != title else []
    bits += place_bits(meta, language)
    return f"[{n}] {title}" + (f" — {', '.join(bits)}" if bits else "")


def format_sources(hits: Sequence[Hit], language: Language = "de") -> str:
    blocks = []
    for n, hit in enumerate(hits, 1):
        text = (hit.text or "").strip()
        if len(text) > MAX_SOURCE_CHARS:
            text = text[:MAX_SOURCE_CHARS] + " …"
        blocks.append(f"{source_header(n, hit, language)}\n{text}")
    return "\n\n".join(blocks)


def build_messages(
    question: str, hits: Sequence[Hit], language: Language | None = None
) -> list[dict[str, str]]:
    """System rules plus one user message holding the numbered sources and the question."""
    lang = language or question_language(question)
    sources_title, question_title = _USER[lang]
    user = f"{sources_title}\n\n{format_sources(hits, lang)}\n\n{question_title} {question.strip()}"
    return [{"role": "system", "content": SYSTEM[lang]}, {"role": "user", "content": user}]
