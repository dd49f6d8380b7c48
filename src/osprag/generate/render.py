"""Sources as text: one line per source for the terminal, a Markdown section for chat clients.

The chat endpoint appends ``sources_markdown`` to the streamed answer, so Open WebUI (or any
OpenAI client) shows each cited ``[n]`` with its file, page, section, layer and link.
"""

from __future__ import annotations

from osprag.generate.answerer import Answer
from osprag.generate.prompt import Language, place_bits
from osprag.results import Hit

HEADING: dict[str, str] = {"de": "Quellen", "en": "Sources"}


def source_line(n: int, hit: Hit, language: Language = "de") -> str:
    """``[n] title — file, p. 3, § section, layer kern``."""
    meta = hit.metadata
    bits = [str(meta.get("source") or hit.id), *place_bits(meta, language), f"layer {hit.layer}"]
    title = str(meta.get("title") or "").strip()
    return f"[{n}] " + (f"{title} — " if title else "") + ", ".join(bits)


def sources_markdown(answer: Answer) -> str:
    """The cited sources as a Markdown list (links when a base URL is set); "" when none."""
    if not answer.citations:
        return ""
    lines = [f"**{HEADING[answer.language]}**", ""]
    for citation in answer.citations:
        line = _escape(source_line(citation.n, answer.sources[citation.n - 1], answer.language))
        if citation.url:
            line += f" ([{'Öffnen' if answer.language == 'de' else 'open'}](<{citation.url}>))"
        lines.append(f"- {line}")
    return "\n".join(lines)


def _escape(text: str) -> str:
    """Keep ``[n]`` literal and stop file names from turning into Markdown emphasis."""
    for ch in ("\\", "*", "_", "`"):
        text = text.replace(ch, "\\" + ch)
    return text.replace("[", "\\[", 1).replace("]", "\\]", 1)
