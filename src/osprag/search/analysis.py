"""Text analysis for the lexical leg: German and English, QM domain tokens kept whole.

Why each step (figures in docs/lexical.md):

* Unicode NFKC first, so ``mm²`` and ``mm2``, full-width digits and ligatures meet.
* Umlauts fold to the base vowel (ä→a, ß→ss, other accents dropped) on both sides; measured
  against ä→ae and no folding it is as good or better on every dev set. The German Snowball
  stemmer already maps ä and ae to a; folding first makes the English stemmer, unstemmed codes
  and compound pieces agree with it (Häuser, Haeuser and Hauser all become "haus").
* Snowball stemming through PyStemmer (C, ~65x faster than the pure-Python snowballstemmer,
  same algorithms and output). A document is stemmed in its own language; a query is stemmed
  with both, because two-word questions defeat any language detector, and the index matches
  each document only against the query terms of the document's language.
* Domain tokens survive whole: a number keeps its decimal part (``0,35`` ≠ ``0,5``; the comma
  becomes a dot so German and English spellings meet), part numbers, codes (``P6``, ``8D``,
  ``D3``, ``%GRR``) and ``i.O.``/``n.i.O.`` are single terms. Their pieces are added as extra
  terms, so ``4711`` still finds ``KS-4711-23``.
* German compounds (words of 10+ letters in German text) also index their prefixes and the
  stems of their suffixes of 4+ letters ("edge pieces"), so ``Crimphöhenmessung`` meets
  ``Crimphöhe`` and ``Messung(en)`` in both directions without a dictionary: the one packaged
  splitter (compound-split) is GPL-3.0, charsplit-fst needs Python 3.12. A document's pieces
  match a query's whole words at full weight; a query's own pieces weigh 0.1, because a
  compound in the query is better matched whole. Pieces do not count towards document length.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import Stemmer  # type: ignore[import-not-found]

from osprag.search.stopwords import ENGLISH, GERMAN

LANGUAGES = ("de", "en")
DEFAULT_LANGUAGE = "de"

Fold = Literal["base", "expand", "none"]
Stemming = Literal["language", "german", "english", "none"]
Compounds = Literal["edge", "ngram", "off"]

_SNOWBALL = {"de": "german", "en": "english"}
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
    compound_query_weight: float = 0.1
    """Weight of a query's compound pieces relative to its whole words."""
    stopwords: bool = True

    def identity(self) -> str:
        return (
            f"v1;fold={self.fold};stem={self.stemming};compounds={self.compounds};"
            f"min={self.compound_min_length};part={self.compound_part_length};"
            f"stop={int(self.stopwords)};compound_lang=de"
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


_Terms = tuple[tuple[str, ...], tuple[str, ...]]  # (whole-token terms, compound pieces)
_NONE: _Terms = ((), ())


class Analyzer:
    """Turns documents and queries into index terms; safe to share between threads.

    Each distinct surface token is analysed once and cached (per language, bounded), which is
    what makes indexing fast: running text repeats its words.
    """

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self._local = threading.local()  # PyStemmer objects are not thread-safe
        self._stop = frozenset(self.fold(w) for w in GERMAN | ENGLISH) | _ABBREVIATION_STOP
        if not self.config.stopwords:
            self._stop = frozenset()
        self._caches: dict[str, dict[str, _Terms]] = {}

    def identity(self) -> str:
        return self.config.identity()

    def normalize(self, text: str) -> str:
        """NFKC, lower case and the configured umlaut folding, applied to a whole text."""
        return self.fold(_normalize(text))

    def fold(self, token: str) -> str:
        """Umlaut and diacritic folding of lower-cased text; applied per distinct token, cached."""
        if token.isascii() or self.config.fold == "none":
            return token
        if self.config.fold == "expand":
            token = _expand_umlauts(token)
        token = token.replace("ß", "ss")
        if token.isascii():
            return token
        stripped = _COMBINING.sub("", unicodedata.normalize("NFD", token))
        return unicodedata.normalize("NFC", stripped)

    def tokens(self, text: str) -> list[str]:
        """The surface tokens of ``text`` after normalisation, before stemming and stopwords."""
        return [self.fold(t) for t in _TOKEN.findall(_normalize(text))]

    def document_terms(self, text: str, language: str | None = None) -> list[str]:
        """Index terms of one document, stemmed in ``language`` (detected when not given)."""
        return self.analyse_document(text, language)[0]

    def analyse_document(self, text: str, language: str | None = None) -> tuple[list[str], int]:
        """Index terms and the BM25 length: compound pieces do not make a document longer."""
        lang = self.document_language(text, language)
        terms: list[str] = []
        length = 0
        for whole, pieces in self._analysed(_TOKEN.findall(_normalize(text)), lang):
            terms += whole
            terms += pieces
            length += len(whole)
        return terms, length

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
        tokens = _TOKEN.findall(_normalize(text))
        langs: Iterable[str] = LANGUAGES
        if self.config.stemming == "german":
            langs = ("de",)
        elif self.config.stemming in ("english", "none"):
            langs = ("en",)
        piece_weight = self.config.compound_query_weight
        out: dict[str, dict[str, float]] = {}
        for lang in langs:
            weights: dict[str, float] = {}
            for whole, pieces in self._analysed(tokens, lang):
                for term in whole:
                    weights[term] = weights.get(term, 0.0) + 1.0
                for term in pieces:
                    weights[term] = weights.get(term, 0.0) + piece_weight
            out[lang] = weights
        if len(out) == 1:
            only = next(iter(out.values()))
            out = {lang: only for lang in LANGUAGES}
        return QueryTerms(out)

    def query_terms(self, text: str) -> list[str]:
        """The distinct terms of a query over both languages (for inspection and tests)."""
        return self.query(text).terms()

    def _analysed(self, tokens: list[str], lang: str) -> list[_Terms]:
        """Per token, its terms; cached per distinct token, which is what makes indexing fast."""
        cache = self._caches.get(lang)
        if cache is None:
            cache = self._caches.setdefault(lang, {})
        out: list[_Terms] = []
        for token in tokens:
            terms = cache.get(token)
            if terms is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                terms = cache[token] = self._analyse_token(self.fold(token), lang)
            out.append(terms)
        return out

    def _stemmer(self, lang: str) -> Any:
        stemmers: dict[str, Any] | None = getattr(self._local, "stemmers", None)
        if stemmers is None:
            # no PyStemmer cache (maxCacheSize 0): the token cache above makes it pure overhead,
            # 25 % of cold-start indexing time
            stemmers = {code: Stemmer.Stemmer(name, 0) for code, name in _SNOWBALL.items()}
            self._local.stemmers = stemmers
        return stemmers[lang]

    def _stem(self, lang: str) -> Callable[[str], str]:
        if self.config.stemming == "none":
            return _identity
        return self._stemmer(lang).stemWord  # type: ignore[no-any-return]

    def _analyse_token(self, token: str, lang: str) -> _Terms:
        if token.isalpha():
            return self._word(token, lang)
        if _ABBREVIATION.fullmatch(token):
            term = token.rstrip(".")
            return _NONE if term in self._stop else ((term,), ())
        whole = _DECIMAL.sub(".", token)
        parts = [p for p in _SEPARATOR.split(whole) if p]
        if len(parts) == 1 and parts[0] != whole:
            # a sign or percent around one piece: ±0.03, %grr, 12%
            return _merge(((whole,), ()), self._part(parts[0], lang))
        if len(parts) > 1 and all(p.isalpha() for p in parts):
            # hyphenated words: Tool-Qualifikation meets Toolqualifikation and both halves
            joined = "".join(parts)
            head = _NONE if joined in self._stop else ((self._stem(lang)(joined),), ())
            return _merge(head, *(self._part(p, lang) for p in parts))
        if len(parts) == 1:
            runs = _RUNS.findall(whole)
            if len(runs) < 2:
                return ((whole,), ())
            # letters and digits glued together: iso26262, 0.35mm2
            return _merge(((whole,), ()), ((*(r for r in runs if len(r) > 1),), ()))
        return _merge(((whole,), ()), *(self._part(p, lang) for p in parts))

    def _part(self, part: str, lang: str) -> _Terms:
        if part.isalpha():
            return self._word(part, lang)
        if len(part) < 2 and not part.isdigit():
            return _NONE
        return self._analyse_token(part, lang)

    def _word(self, word: str, lang: str) -> _Terms:
        if len(word) < 2 or word in self._stop:
            return _NONE
        stem = self._stem(lang)
        head = stem(word)
        cfg = self.config
        if cfg.compounds == "off" or lang != "de" or len(word) < cfg.compound_min_length:
            return ((head,), ())
        n = cfg.compound_part_length
        if cfg.compounds == "ngram":
            return (
                (head,),
                tuple(sorted({f"#{word[i : i + n]}" for i in range(len(word) - n + 1)})),
            )
        # Prefixes stay raw: the stem of a German modifier ("crimphöhe" -> "crimphoh") is one of
        # them already. Suffixes are heads and inflect, so each is stemmed like a word.
        cut = range(n, len(word) - n + 1)
        heads = [word[i:] for i in cut]
        if stem is not _identity:
            heads = self._stemmer(lang).stemWords(heads)
        pieces = dict.fromkeys([word[:i] for i in cut] + [h for h in heads if len(h) >= n])
        pieces.pop(head, None)
        return ((head,), tuple(pieces))


def _identity(word: str) -> str:
    return word


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().replace("\u2212", "-")


def _expand_umlauts(token: str) -> str:
    return token.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")


def _merge(*analysed: _Terms) -> _Terms:
    whole = dict.fromkeys(t for terms, _ in analysed for t in terms)
    pieces = dict.fromkeys(t for _, terms in analysed for t in terms if t not in whole)
    return tuple(whole), tuple(pieces)


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
