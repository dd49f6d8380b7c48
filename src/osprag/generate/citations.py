"""Check every ``[n]`` and every attributed quote in a model's answer against the sources.

A model cites numbers it was never given and puts words in a document's mouth. Both are
caught here, deterministically and without a second model call:

* A citation group is ``[1]``, ``[1, 3]``, ``[1;3]``, ``[1-3]``, ``[Quelle 2]``; ``[1][2]`` is
  two groups.
  A number outside ``1..len(sources)`` is removed from its group; an empty group is removed
  with the space before it. ``[0,35]`` (a leading zero) is a decimal, not a citation.
* A quote is text in „…“, “…”, "…", »…« or «…». It is attributed to the citation group that
  follows it in the same sentence (the prompt asks for „…“ [n]). Its text, with whitespace,
  case and typographic quotes/dashes normalised and ``…`` as a gap, must occur in one of the
  cited chunks; otherwise the group is replaced by a visible flag, so an invented quote is
  never shown as a citation.

``stable_end`` supports streaming: everything before it reads the same whatever text follows,
so the checked prefix can be sent while the model is still writing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

_LABEL = r"(?:(?:quellen?|sources?|ref\.?)\s*)?"  # [Quelle 2], [Sources 1, 3]: small models
_GROUP = re.compile(
    rf"\[\s*({_LABEL}\d{{1,3}}(?:\s*(?:[,;]|–|-|\band\b|\bund\b)\s*{_LABEL}\d{{1,3}})*)\s*\](?!\()",
    re.IGNORECASE,
)
_LABEL_WORD = re.compile(_LABEL, re.IGNORECASE)
_NUMBER_SPLIT = re.compile(r"\s*(?:[,;]|\band\b|\bund\b)\s*")
_RANGE = re.compile(r"^(\d+)\s*[-–]\s*(\d+)$")
_QUOTE = re.compile(
    r"„(?P<a>[^“”\"„\n]{1,600})[“”\"]"
    r"|“(?P<b>[^“”\"„\n]{1,600})”"
    r"|\"(?P<c>[^\"“”„\n]{1,600})\""
    r"|»(?P<d>[^«»\n]{1,600})«"
    r"|«(?P<e>[^«»\n]{1,600})»"
)
_OPENERS = '„“"»«'
_GAP = re.compile(r"^[^.!?\n„“”\"»«\[]{0,80}$")  # quote end → its citation: same sentence
_GAP_BEFORE_GROUP = re.compile(r"^[^.!?\n„“”\"»«]{0,80}$")
_ELLIPSIS = re.compile(r"\s*(?:\[\s*(?:…|\.\.\.)\s*\]|\(\s*(?:…|\.\.\.)\s*\)|…|\.\.\.)\s*")
_TRIM = " \t\n.,;:!?-–—"
_PENDING_WINDOW = 24  # an unclosed "[" further back than this is not a citation in progress

FLAG: dict[str, str] = {
    "de": "[Zitat nicht in der Quelle gefunden]",
    "en": "[quote not found in the source]",
}


@dataclass
class QuoteCheck:
    """One quoted passage: whom it is attributed to and where it was found."""

    text: str
    cited: list[int]
    found_in: list[int]

    @property
    def verified(self) -> bool:
        return bool(self.found_in)

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "cited": self.cited,
            "found_in": self.found_in,
            "verified": self.verified,
        }


@dataclass
class CheckedText:
    """The answer as shown, the valid citations in order of first use, and what was removed."""

    text: str
    cited: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    quotes: list[QuoteCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def quote_for(self, n: int) -> str | None:
        """The first verified quote attributed to source ``n``."""
        for quote in self.quotes:
            if n in quote.found_in:
                return quote.text
        return None


@dataclass(frozen=True)
class CitationGroup:
    start: int
    end: int
    numbers: tuple[int, ...]


def normalise(text: str) -> str:
    """What a quote and a chunk are compared in: NFKC, case-folded, one space, plain quotes."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    text = re.sub(r"[„“”«»]", '"', text)
    text = re.sub(r"[‚‘’`´]", "'", text)
    text = re.sub(r"[‐‑‒–—]", "-", text)
    return " ".join(text.casefold().split())


def parse_groups(text: str) -> list[CitationGroup]:
    """Every citation group in ``text`` with its numbers (ranges expanded, order kept)."""
    groups = []
    for match in _GROUP.finditer(text):
        numbers = _numbers(match.group(1))
        if numbers is not None:
            groups.append(CitationGroup(match.start(), match.end(), numbers))
    return groups


def _numbers(inner: str) -> tuple[int, ...] | None:
    out: list[int] = []
    for part in _NUMBER_SPLIT.split(_LABEL_WORD.sub("", inner).strip()):
        if not part:
            continue
        span = _RANGE.match(part)
        if span:
            lo, hi = int(span.group(1)), int(span.group(2))
            if span.group(1).startswith("0") or hi < lo or hi - lo > 20:
                return None
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            if part.startswith("0"):
                return None  # 0,35 or [0]: a decimal, not a source number
            out.append(int(part))
        else:
            return None
    return tuple(out) if out else None


def quote_in(quote: str, source: str) -> bool:
    """True when the quote's pieces (split at ``…``) occur in the source, in order."""
    haystack = normalise(source)
    position = 0
    pieces = [normalise(p).strip(_TRIM) for p in _ELLIPSIS.split(quote)]
    pieces = [p for p in pieces if p]
    if not pieces:
        return True
    for piece in pieces:
        found = haystack.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def check_citations(
    text: str, sources: Sequence[str], language: Literal["de", "en"] = "de"
) -> CheckedText:
    """Remove citations of unknown sources and flag invented quotes; see the module docstring."""
    n_sources = len(sources)
    groups = parse_groups(text)
    by_start = {g.start: g for g in groups}
    replace: dict[int, str] = {}  # group start -> replacement ("" = removed)
    result = CheckedText(text="")

    for match in _QUOTE.finditer(text):
        quote = next(g for g in match.groups() if g is not None)
        group = _attributed(text, match.end(), groups)
        if group is None:
            if not any(quote_in(quote, s) for s in sources) and len(quote.split()) >= 4:
                result.warnings.append(f"unattributed quote not found in any source: {quote!r}")
            continue
        valid = [n for n in dict.fromkeys(group.numbers) if 1 <= n <= n_sources]
        found = [n for n in valid if quote_in(quote, sources[n - 1])]
        result.quotes.append(QuoteCheck(quote, list(group.numbers), found))
        if not found:
            replace[group.start] = FLAG[language]
            result.warnings.append(
                f"quote attributed to {_fmt(group.numbers)} is not in "
                f"{'that source' if len(valid) == 1 else 'those sources'}: {quote!r}"
            )

    invalid: dict[int, None] = {}
    cited: dict[int, None] = {}
    for group in groups:
        if group.start in replace:
            invalid.update(dict.fromkeys(n for n in group.numbers if not 1 <= n <= n_sources))
            continue
        valid = [n for n in dict.fromkeys(group.numbers) if 1 <= n <= n_sources]
        bad = [n for n in group.numbers if not 1 <= n <= n_sources]
        invalid.update(dict.fromkeys(bad))
        cited.update(dict.fromkeys(valid))
        if bad:
            replace[group.start] = f"[{', '.join(map(str, valid))}]" if valid else ""
    if invalid:
        result.warnings.append(
            f"removed citation(s) of unknown source(s) {_fmt(tuple(invalid))} "
            f"(the answer had {n_sources} source(s))"
        )

    out: list[str] = []
    last = 0
    for start in sorted(replace):
        group = by_start[start]
        piece = text[last:start]
        new = replace[start]
        if new == "" or new == FLAG[language]:
            piece = piece.rstrip(" \t")
            if new:
                new = " " + new
        out.append(piece + new)
        last = group.end
    out.append(text[last:])
    result.text = "".join(out)
    result.cited = list(cited)
    result.invalid = list(invalid)
    return result


def _attributed(text: str, quote_end: int, groups: Sequence[CitationGroup]) -> CitationGroup | None:
    for group in groups:
        if group.start < quote_end:
            continue
        gap = text[quote_end : group.start]
        return group if _GAP.match(gap) else None
    return None


def _fmt(numbers: Sequence[int]) -> str:
    return ", ".join(f"[{n}]" for n in numbers)


def stable_end(text: str) -> int:
    """Length of the prefix whose checked form cannot change, whatever the model writes next.

    Held back: trailing whitespace (a following removed ``[9]`` eats it), an unclosed ``[``, an
    unclosed quote, and a closed quote whose citation may still follow in the same sentence.
    """
    end = len(text.rstrip(" \t"))
    bracket = text.rfind("[", 0, end)
    if (
        bracket >= 0
        and end - bracket <= _PENDING_WINDOW
        and ("]" not in text[bracket:end] or text[end - 1] == "]")
    ):
        end = bracket  # a citation in progress, or one that a "(" could still turn into a link
    last_quote_end = 0
    last_quote_start = -1
    for match in _QUOTE.finditer(text, 0, end):
        last_quote_end, last_quote_start = match.end(), match.start()
    tail = text[last_quote_end:end]
    opener = _open_quote(tail)
    if opener is not None:
        end = last_quote_end + opener
    elif last_quote_start >= 0:
        gap = text[last_quote_end:end]
        if _GAP_BEFORE_GROUP.match(gap) and not parse_groups(gap):
            end = last_quote_start  # its citation (or the sentence end) has not come yet
    return len(text[:end].rstrip(" \t"))


def _open_quote(tail: str) -> int | None:
    """Offset of an opening quote mark in ``tail`` that is still waiting for its close."""
    for i, ch in enumerate(tail):
        if ch in _OPENERS and len(tail) - i <= 600:
            return i
    return None
