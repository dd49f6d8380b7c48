"""A conversation → one standalone search question (for the chat endpoint's follow-ups).

"und für 0,5 mm²?" retrieves nothing on its own; with the earlier "Welche Crimphöhe gilt für
0,35 mm²?" it means "Welche Crimphöhe gilt für 0,5 mm²?". With an LLM the model rewrites the
question; without one (or when it fails) a heuristic does: a short or elliptic last turn is
merged with the previous user question — a value with the same unit replaces the old value, a
bare noun ("und die Crimphöhe?") replaces the previous question's only noun, otherwise the
previous question's content words are put in front of the new turn.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from osprag.errors import InvalidInput, LLMError
from osprag.generate.llm import LLMClient
from osprag.generate.prompt import question_language
from osprag.search.stopwords import ENGLISH, GERMAN

log = logging.getLogger(__name__)

SHORT_TURN = 5
"""A last turn of at most this many words is treated as a follow-up."""

_CONTINUATION = re.compile(
    r"^\s*(und|oder|aber|auch|sowie|dazu|davon|dafür|what about|how about|and|or|also|"
    r"was ist mit|wie ist es mit|wie sieht es (?:mit|bei)|gilt das auch|and for|und bei|"
    r"und wenn|same for|ebenso)\b",
    re.IGNORECASE,
)
_ANAPHORA = re.compile(
    r"\b(das|dies|diese[rsmn]?|dort|dafür|davon|es|it|this|that|these|those|there|they|them)\b",
    re.IGNORECASE,
)
_VALUE = re.compile(
    r"(?<![\w.,])(?P<num>[±]?\d+(?:[.,]\d+)?)\s*(?P<unit>mm²|mm2|mm|µm|um|cm|m|n|nm|kn|%|°c|v|a|kg|g|s|h)?"
    r"(?![\w²])",
    re.IGNORECASE,
)
_WORD = re.compile(r"[\w²%.,±-]+", re.UNICODE)
_CAPITALISED = re.compile(r"(?<![\w-])[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜa-zäöüß]+)*\b")
_BARE_NOUN = re.compile(
    r"^(?:(?:der|die|das|den|dem|des|the)\s+)?([A-ZÄÖÜ][\wäöüß-]+)\s*\??$", re.IGNORECASE
)
_STOP = frozenset(w.lower() for w in GERMAN | ENGLISH)

PROMPT: dict[str, str] = {
    "de": (
        "Formuliere die letzte Frage des Nutzers als eigenständige Suchfrage um, die ohne den "
        "Gesprächsverlauf verständlich ist. Behalte Fachbegriffe, Werte und Einheiten bei. "
        "Antworte nur mit der Frage, auf Deutsch."
    ),
    "en": (
        "Rewrite the user's last question as a standalone search question that is "
        "understandable without the conversation. Keep technical terms, values and units. "
        "Reply with the question only, in English."
    ),
}


def message_text(message: Mapping[str, Any]) -> str:
    """The text of an OpenAI message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, Mapping) and p.get("type") in (None, "text")
        )
    return ""


def _user_turns(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    return [t for m in messages if m.get("role") == "user" and (t := message_text(m).strip())]


def is_task_request(messages: Sequence[Mapping[str, Any]]) -> bool:
    """True for Open WebUI's background tasks (title, tags, follow-ups, query generation).

    They arrive at the chat endpoint as a user message starting with ``### Task:``; searching
    the documents for them is wasted work, so a chat route should hand them to the LLM as
    they are (or answer briefly without one).
    """
    turns = _user_turns(messages)
    return bool(turns) and turns[-1].lstrip().startswith("### Task:")


def is_follow_up(text: str) -> bool:
    """Short, starting like a continuation, or leaning on a pronoun: needs the earlier turn."""
    words = _WORD.findall(text)
    if len(words) <= SHORT_TURN or _CONTINUATION.match(text):
        return True
    return len(words) <= 8 and bool(_ANAPHORA.search(text))


def _strip_continuation(text: str) -> str:
    return _CONTINUATION.sub("", text, count=1).strip(" ,")


def _unit(match: re.Match[str]) -> str:
    unit = (match.group("unit") or "").lower()
    return {"mm2": "mm²", "um": "µm"}.get(unit, unit)


def heuristic_condense(previous: str, last: str) -> str:
    """Merge a follow-up with the previous question (see the module docstring)."""
    new_values = list(_VALUE.finditer(last))
    old_values = list(_VALUE.finditer(previous))
    if len(new_values) == 1 and old_values:
        new = new_values[0]
        same = [m for m in old_values if _unit(m) == _unit(new)] or (
            old_values if len(old_values) == 1 and not _unit(new) else []
        )
        if len(same) == 1:
            old = same[0]
            replacement = new.group(0).strip()
            return (previous[: old.start()] + replacement + previous[old.end() :]).strip()
    rest = _strip_continuation(last)
    swapped = _swap_noun(previous, rest)
    if swapped is not None:
        return swapped
    drop = {m.group(0).strip().lower() for m in old_values} if new_values else set()
    seen = {w.lower() for w in _WORD.findall(rest)}
    context = []
    for word in _WORD.findall(previous):
        low = word.lower().strip(".,")
        if not low or low in _STOP or low in seen or word.lower() in drop or low.isdigit():
            continue
        if new_values and _VALUE.fullmatch(word):
            continue
        seen.add(low)
        context.append(word.strip(".,"))
    return " ".join([*context, rest]).strip()


def _nouns(text: str) -> list[re.Match[str]]:
    """Capitalised words after the first word: German nouns (and names), no tagger needed."""
    return [m for m in _CAPITALISED.finditer(text) if m.start() > 0]


def _swap_noun(previous: str, rest: str) -> str | None:
    """ "und die Crimphöhe?" after "Wie oft wird die Abzugskraft geprüft?" swaps the one noun.

    Only for a bare (article +) noun turn and a previous question with exactly one noun;
    "beim Spritzguss" adds context instead, and two nouns leave the swap ambiguous.
    """
    match = _BARE_NOUN.match(rest)
    if match is None:
        return None
    old = _nouns(previous)
    if len(old) != 1:
        return None
    noun = old[0]
    return previous[: noun.start()] + match.group(1) + previous[noun.end() :]


def _resolve(turns: Sequence[str]) -> str:
    """Each follow-up builds on the question it follows, itself resolved the same way."""
    standalone = turns[0]
    for turn in turns[1:]:
        standalone = heuristic_condense(standalone, turn) if is_follow_up(turn) else turn
    return standalone


def condense(messages: Sequence[Mapping[str, Any]], llm: LLMClient | None = None) -> str:
    """The standalone question for the conversation's last user turn.

    A first question, or one that stands on its own, is returned unchanged. With ``llm`` the
    model rewrites a follow-up; if it fails or returns something unusable, the heuristic does.
    """
    turns = _user_turns(messages)
    if not turns:
        raise InvalidInput("the conversation has no user message")
    last = turns[-1]
    if len(turns) == 1 or not is_follow_up(last):
        return last
    if llm is not None:
        rewritten = _ask(messages, last, llm)
        if rewritten:
            return rewritten
    return _resolve(turns[-6:])


def _ask(messages: Sequence[Mapping[str, Any]], last: str, llm: LLMClient) -> str | None:
    lang = question_language(last)
    history = "\n".join(
        f"{m.get('role')}: {message_text(m).strip()}"
        for m in messages[-8:]
        if m.get("role") in ("user", "assistant") and message_text(m).strip()
    )
    try:
        text = llm.chat(
            [
                {"role": "system", "content": PROMPT[lang]},
                {"role": "user", "content": history},
            ],
            temperature=0.0,
            max_tokens=120,
        )
    except LLMError as exc:
        log.warning("condensing the question with the LLM failed (%s); using the heuristic", exc)
        return None
    text = " ".join(text.strip().strip('"„“').split())
    if not text or len(text) > 400:
        return None
    return text
