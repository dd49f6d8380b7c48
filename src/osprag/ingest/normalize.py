"""One text normalisation for every loader, so that the same words give the same chunks and ids.

Extracted text differs by format in ways that do not matter to a reader but change hashes and
embeddings: decomposed umlauts from macOS, soft hyphens and zero-width joiners from Word, CR/LF
from Windows, word breaks at PDF line ends. ``normalize_text`` removes those differences and
nothing else: it keeps line structure (paragraphs, list items, table rows) for the chunker.
"""

from __future__ import annotations

import re
import unicodedata

# Invisible characters that only steer layout or ligatures; Word and PDF producers scatter them.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)
# Spaces that should compare equal to a plain space (NBSP in "0,35 mm²", NNBSP in "z. B.").
_SPACES = dict.fromkeys(
    map(
        ord,
        "\t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
        "\u2008\u2009\u200a\u202f\u205f\u3000",
    ),
    " ",
)
# Line separators: form feed is a PDF page break, vertical tab a Word manual line break.
_LINE_BREAKS = re.compile(r"\r\n|[\r\f\v\u0085\u2028\u2029]")
# C0/C1 control characters except tab and newline carry no text.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_NEEDS_WORK = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200d\u2060\ufeff]")
_TRAILING_SPACE = re.compile(r"[ ]+$", re.MULTILINE)
_INNER_SPACE_RUN = re.compile(r"(?<=\S) {2,}(?=\S)")
_BLANK_RUN = re.compile(r"\n{3,}")
# A word broken at a line end: letter, hyphen, newline, (indent,) lower-case continuation.
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-\n[ ]*(?=([^\W\d_]+))")
# "Ein- und Ausgang", "Kunden- oder Lieferantenreklamation": the hyphen stands for an elided
# word part and must stay when the next line starts with a conjunction.
_KEEP_AFTER_HYPHEN = frozenset(
    "und oder bzw sowie bis als noch wie beziehungsweise and or to nor".split()
)


def _join_hyphenated(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        next_word = match.group(1)
        if not next_word[0].islower() or next_word in _KEEP_AFTER_HYPHEN:
            return match.group(0)
        return ""

    return _HYPHEN_BREAK.sub(repl, text)


def normalize_text(s: str, *, dehyphenate: bool = True, collapse_spaces: bool = True) -> str:
    """NFC, invisible characters removed, one space between words, at most one blank line.

    Leading indentation of a line is kept (nested lists, code). ``dehyphenate`` joins a word
    broken at a line end ("Crimp-\\nhöhe" → "Crimphöhe") only when the hyphen ends the line and
    the next line starts with a lower-case letter, so "Crimp-Kontakt" and "VDA 6.3-\\nAudit"
    keep their hyphen. ``collapse_spaces=False`` keeps runs of spaces (code blocks).
    """
    text = unicodedata.normalize("NFC", s)
    text = text.translate(_INVISIBLE)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = text.translate(_SPACES)
    text = _TRAILING_SPACE.sub("", text)
    if dehyphenate:
        text = _join_hyphenated(text)
    if collapse_spaces:
        text = _INNER_SPACE_RUN.sub(" ", text)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip("\n")


def normalize_inline(s: str) -> str:
    """Text that must be one line (headings, table cells, header values): all whitespace → one
    space."""
    # Fast path for the common case (called once per spreadsheet cell): nothing invisible, no
    # control characters, already NFC. str.split() already treats NBSP and friends as spaces.
    if not _NEEDS_WORK.search(s) and unicodedata.is_normalized("NFC", s):
        return " ".join(s.split())
    return " ".join(normalize_text(s, dehyphenate=False).split())
