"""Text analysis for the lexical leg: German and English, QM domain tokens kept whole.

Why each step (figures in docs/lexical.md):

* Unicode NFKC first, so ``mm²`` and ``mm2``, full-width digits and ligatures meet.
* Umlauts fold to the base vowel (ä→a, ß→ss) on both sides. The German Snowball stemmer folds
  ``ä`` and ``ae`` to ``a`` itself, so folding before it changes nothing for German; it makes
  the English stemmer, unstemmed codes and compound parts agree with it.
* Snowball stemming through PyStemmer (C, ~65x faster than the pure-Python snowballstemmer,
  same algorithms and output). A document is stemmed in its own language; a query is stemmed
  with both, because two-word questions defeat any language detector, and the index matches
  each document only against the query terms of the document's language.
* Domain tokens survive whole: a number keeps its decimal part (``0,35`` ≠ ``0,5``; the comma
  becomes a dot so German and English spellings meet), part numbers, codes (``P6``, ``8D``,
  ``D3``, ``%GRR``) and ``i.O.``/``n.i.O.`` are single terms. Their pieces are added as extra
  terms, so ``4711`` still finds ``KS-4711-23``.
* German compounds: long words also index the stems of their prefixes and suffixes, so
  ``Crimphöhenmessung`` meets ``Crimphöhe`` and ``Messung`` without a dictionary (the only
  packaged splitter is GPL). Query-side pieces are down-weighted.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import Stemmer

from osprag.search.stopwords import ENGLISH, GERMAN

LANGUAGES = ("de", "en")
DEFAULT_LANGUAGE = "de"

Fold = Literal["base", "expand", "none"]
Stemming = Literal["language", "german", "english", "none"]
Compounds = Literal["edge", "ngram", "off"]

_SNOWBALL = {"de": "german", "en": "english"}
_EXPAND = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_SHARP_S = str.maketrans({"ß": "ss"})
_COMBINING = re.compile(r"[\u0300-\u036f]")
_TOKEN = re.compile(
    r"(?<!\w)(?:[^\W\d_]{1,3}\.)+[^\W\d_]{1,3}\.?(?!\w)"  # i.O., n.i.O., z.B.
    r"|(?:%|[±-](?=\d))?\w+(?:[-./,'+&]\w+)*%?"  # words, numbers, codes, part numbers
)
_SEPARATOR = re.compile(r"[-/'+&_%±]|(?<!\d)[.,]|[.,](?!\d)")
_RUNS = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_DECIMAL = re.compile(r"(?<=\d),(?=\d)")
_ABBREVIATION = re.compile(r"(?:[^\W\d_]{1,3}\.)+[^\W\d_]{1,3}\.?")
_ABBREVIATION_STOP = frozenset({"z.b", "u.a", "d.h", "z.t", "e.g", "i.e", "u.u", "o.a", "s.o"})
_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class AnalyzerConfig:
    """The analysis choices; an index records ``identity()`` and refuses a different one."""

    fold: Fold = "base"
    stemming: Stemming = "language"
    compounds: Compounds = "edge"
    compound_min_length: int = 10
    """Words shorter than this (after folding) are not split: short words are rarely compounds."""
    compound_part_length: int = 4
    """Shortest prefix/suffix (or the n of n-grams): shorter pieces match unrelated words."""
    compound_query_weight: float = 0.3
    """Weight of a query's compound pieces relative to its whole words."""
    stopwords: bool = True

    def identity(self) -> str:
        return (
            f"v1;fold={self.fold};stem={self.stemming};compounds={self.compounds};"
            f"min={self.compound_min_length};part={self.compound_part_length};"
            f"stop={int(self.stopwords)}"
        )


@dataclass(frozen=True)
class QueryTerms:
    """Weighted query terms per document language: a document is scored with its own list."""

    by_language: dict[str, dict[str, float]]

    def terms(self) -> list[str]:
        seen: dict[str, None] = {}
        for weights in self.by_language.values():
            seen.update(dict.fromkeys(weights))
        return list(seen)


_Piece = tuple[str, bool]  # (term, is a compound piece)


class Analyzer:
    """Turns documents and queries into index terms; safe to share between threads."""

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self._stemmers = {lang: Stemmer.Stemmer(name) for lang, name in _SNOWBALL.items()}
        self._stop = _fold_words(GERMAN | ENGLISH, self.config.fold) | _ABBREVIATION_STOP
        if not self.config.stopwords:
            self._stop = frozenset()
        self._caches: dict[str, dict[str, tuple[_Piece, ...]]] = {}

    def identity(self) -> str:
        return self.config.identity()

    def normalize(self, text: str) -> str:
        """NFKC, lower case and the configured umlaut folding, applied to a whole text."""
        text = unicodedata.normalize("NFKC", text).lower().replace("−", "-")
        if self.config.fold == "none":
            return text
        if self.config.fold == "expand":
            text = text.translate(_EXPAND)
        else:
            text = text.translate(_SHARP_S)
        if text.isascii():
            return text
        return unicodedata.normalize("NFC", _COMBINING.sub("", unicodedata.normalize("NFD", text)))

    def tokens(self, text: str) -> list[str]:
        """The surface tokens of ``text`` after normalisation, before stemming and stopwords."""
        return _TOKEN.findall(self.normalize(text))

    def document_terms(self, text: str, language: str | None = None) -> list[str]:
        """Index terms of one document, stemmed in ``language`` (detected when not given)."""
        lang = self.document_language(text, language)
        return [term for term, _ in self._pieces(self.tokens(text), lang)]

    def document_language(self, text: str, language: str | None) -> str:
        if self.config.stemming == "german":
            return "de"
        if self.config.stemming == "english":
            return "en"
        if language in LANGUAGES:
            return language
        return detect_language(text)

    def query(self, text: str) -> QueryTerms:
        """Query terms for each language a document may be in, with their weights."""
        tokens = self.tokens(text)
        langs: Iterable[str] = LANGUAGES
        if self.config.stemming == "german":
            langs = ("de",)
        elif self.config.stemming in ("english", "none"):
            langs = ("en",)
        piece_weight = self.config.compound_query_weight
        out: dict[str, dict[str, float]] = {}
        for lang in langs:
            weights: dict[str, float] = {}
            for term, piece in self._pieces(tokens, lang):
                weights[term] = weights.get(term, 0.0) + (piece_weight if piece else 1.0)
            out[lang] = weights
        if len(out) == 1:
            only = next(iter(out.values()))
            out = {lang: only for lang in LANGUAGES}
        return QueryTerms(out)

    def query_terms(self, text: str) -> list[str]:
        """The distinct terms of a query over both languages (for inspection and tests)."""
        return self.query(text).terms()

    def _pieces(self, tokens: list[str], lang: str) -> list[_Piece]:
        cache = self._caches.get(lang)
        if cache is None:
            cache = self._caches.setdefault(lang, {})
        out: list[_Piece] = []
        for token in tokens:
            pieces = cache.get(token)
            if pieces is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                pieces = cache[token] = self._analyse_token(token, lang)
            out.extend(pieces)
        return out

    def _stem(self, lang: str) -> Callable[[str], str]:
        if self.config.stemming == "none":
            return _identity
        return self._stemmers[lang].stemWord  # type: ignore[no-any-return]

    def _analyse_token(self, token: str, lang: str) -> tuple[_Piece, ...]:
        if token.isalpha():
            return self._word(token, lang)
        if _ABBREVIATION.fullmatch(token):
            term = token.rstrip(".")
            return () if term in self._stop else ((term, False),)
        whole = _DECIMAL.sub(".", token)
        parts = [p for p in _SEPARATOR.split(whole) if p]
        if len(parts) == 1 and parts[0] != whole:
            # a sign or percent around one piece: ±0.03, %grr, 12%
            return ((whole, False), *self._part(parts[0], lang))
        if len(parts) > 1 and all(p.isalpha() for p in parts):
            # hyphenated words: Tool-Qualifikation meets Toolqualifikation and both halves
            joined = "".join(parts)
            head = ((self._stem(lang)(joined), False),) if joined not in self._stop else ()
            rest = [piece for p in parts for piece in self._part(p, lang)]
            return _unique((*head, *rest))
        if len(parts) == 1:
            runs = _RUNS.findall(whole)
            if len(runs) < 2:
                return ((whole, False),)
            # letters and digits glued together: iso26262, 0.35mm2
            return _unique(((whole, False), *((r, False) for r in runs if len(r) > 1)))
        rest = [piece for p in parts for piece in self._part(p, lang)]
        return _unique(((whole, False), *rest))

    def _part(self, part: str, lang: str) -> tuple[_Piece, ...]:
        if part.isalpha():
            return self._word(part, lang)
        if len(part) < 2 and not part.isdigit():
            return ()
        return self._analyse_token(part, lang)

    def _word(self, word: str, lang: str) -> tuple[_Piece, ...]:
        if len(word) < 2 or word in self._stop:
            return ()
        stem = self._stem(lang)
        head: _Piece = (stem(word), False)
        cfg = self.config
        if cfg.compounds == "off" or len(word) < cfg.compound_min_length:
            return (head,)
        n = cfg.compound_part_length
        if cfg.compounds == "ngram":
            grams = {f"#{word[i : i + n]}" for i in range(len(word) - n + 1)}
            return (head, *((g, True) for g in sorted(grams)))
        pieces: dict[str, None] = {}
        for i in range(n, len(word) - n + 1):
            for piece in (word[:i], word[i:]):
                if piece not in self._stop:
                    pieces[stem(piece)] = None
        pieces.pop(head[0], None)
        return (head, *((p, True) for p in pieces if len(p) >= n))


def _identity(word: str) -> str:
    return word


def _unique(pieces: Iterable[_Piece]) -> tuple[_Piece, ...]:
    return tuple(dict.fromkeys(pieces))


def _fold_words(words: Iterable[str], fold: Fold) -> frozenset[str]:
    folder = Analyzer.__new__(Analyzer)
    folder.config = AnalyzerConfig(fold=fold)
    return frozenset(folder.normalize(w) for w in words)


_DE_HINTS = GERMAN - ENGLISH
_EN_HINTS = ENGLISH - GERMAN
_WORD = re.compile(r"[^\W\d_]+")


def detect_language(text: str) -> str:
    """de or en by stopword counts over the first 5,000 characters; German when unsure.

    Only for documents that arrive without a ``language``: enough for a paragraph, not for
    a query, which is why queries are analysed in both languages instead.
    """
    de = en = 0
    for word in _WORD.findall(text[:5000].lower()):
        if word in _DE_HINTS:
            de += 1
        elif word in _EN_HINTS:
            en += 1
    return "en" if en > de else DEFAULT_LANGUAGE
