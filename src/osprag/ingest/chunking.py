"""Loader blocks → chunks sized in tokens of the embedding model's own tokenizer.

Why tokens, not characters: MiniLM's English WordPiece vocabulary spends about one token per
three characters of German but one per 4-5 of English, so a character budget either lets the
model silently truncate German chunks (the tail is never embedded, hence never found) or wastes
half the window on English ones.

Offsets. Every ``Chunk.char_start``/``char_end`` indexes :func:`document_text` of the block list:
``"\\n\\n".join(block.text for block in blocks)``, with each block's text exactly as loaded (a
``rows`` block contributes its ``text`` only, not its ``header``). A chunk's text is
``prefix + repeat + document_text[char_start:char_end]`` where ``prefix`` is the heading path
line (``"Title > Section\\n"``, only with ``heading_prefix``) and ``repeat`` is the column header
line(s) plus ``"\\n"`` that a ``rows`` chunk, or the continuation of a split table, starts with.

Sizes. ``Chunk.tokens`` counts the whole chunk text without special tokens; it never exceeds
:attr:`Chunker.budget`, which leaves room for the model's special tokens ([CLS]/[SEP]) and its
passage prefix inside ``max_seq_length``, so nothing a chunk says is ever truncated away.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from .model import Block, Chunk

# Chosen by bench/chunking_study.py, see docs/chunking.md.
DEFAULT_MAX_TOKENS = 128
DEFAULT_OVERLAP_TOKENS = 0
DEFAULT_HEADING_PREFIX = True

BLOCK_SEPARATOR = "\n\n"
PATH_SEPARATOR = " > "


# ---------------------------------------------------------------- token counting


@runtime_checkable
class TokenCounter(Protocol):
    """How the chunker measures text; anything with these three members will do."""

    @property
    def special_tokens(self) -> int:
        """Tokens the model adds around every input ([CLS] and [SEP] for BERT: 2)."""
        ...

    @property
    def additive(self) -> bool:
        """True if a text's count is the sum of its whitespace-separated words' counts.

        Lets the chunker skip recounting assembled chunks; a False here costs one more
        tokenizer pass and never correctness.
        """
        ...

    def count(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens, one per text."""
        ...


_SPLITTING_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_LOCAL_NORMALIZERS = frozenset(
    {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip"}
)


def _is_additive(spec: dict[str, Any]) -> bool:
    """Whitespace-splitting pre-tokenizers never merge across words, so counts add up."""
    pre = spec.get("pre_tokenizer") or {}
    norm = spec.get("normalizer") or {}
    norms = (
        norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm] if norm else []
    )
    return pre.get("type") in _SPLITTING_PRE_TOKENIZERS and all(
        n.get("type") in _LOCAL_NORMALIZERS for n in norms
    )


class TokenizerCounter:
    """Counts with a Hugging Face ``tokenizer.json`` through the ``tokenizers`` library.

    Truncation and padding stored in the file are switched off: MiniLM's file truncates and
    pads to 128, which would make every count 128. For additive tokenizers (BERT WordPiece)
    each distinct word is encoded once and memoised: a corpus repeats its words so much that
    this is several times faster than encoding whole texts.
    """

    def __init__(self, tokenizer_json: Path, *, cache_size: int = 200_000) -> None:
        from tokenizers import Tokenizer

        path = tokenizer_json / "tokenizer.json" if tokenizer_json.is_dir() else tokenizer_json
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._additive = _is_additive(json.loads(path.read_text(encoding="utf-8")))
        self._special = len(self._tokenizer.encode("", add_special_tokens=True).ids)
        self._words: dict[str, int] = {}
        self._cache_size = cache_size
        self._encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)

    @property
    def special_tokens(self) -> int:
        return self._special

    @property
    def additive(self) -> bool:
        return self._additive

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._encode(texts, add_special_tokens=False)]

    def count(self, texts: Sequence[str]) -> list[int]:
        if not self._additive:
            return self._lengths(list(texts)) if texts else []
        cache = self._words
        if len(cache) > self._cache_size:
            cache = {}  # a fresh dict, so a concurrent caller keeps a consistent one
        split = [t.split() for t in texts]
        missing = sorted({w for words in split for w in words if w not in cache})
        if missing:
            cache.update(zip(missing, self._lengths(missing), strict=True))
        self._words = cache
        get = cache.__getitem__
        return [sum(map(get, words)) for words in split]


def model_max_seq_length(folder: Path) -> int | None:
    """The sentence-transformers ``max_seq_length`` of a model folder, if it states one."""
    for name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("config.json", "max_position_embeddings"),
    ):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


# ---------------------------------------------------------------- sentences and words

# Always abbreviations: a following capital does not start a sentence (German capitalises nouns).
_ABBREVIATIONS = frozenset(
    """
    abb abschn abt allg anh anm bd bde betr bspw bzgl bzw ca chr co dgl dipl dr ebd eig einschl
    entspr etc evtl exkl fa ff gem geb gegr ggf ggü gest hrsg hr hl inc inkl insb insbes jh jhd
    jr kap kl lfd lt ltd mio mind mrd mr mrs ms mtl nr od orig prof rd sog spez st std str tel
    tsd usw vgl vs zzgl zt zw ziff jan feb febr apr jun jul aug sep sept okt nov dez approx
    resp al
    """.split()
)
# Abbreviations that are also words: only before a number ("Art. 5", but "eine Art. Sie").
_ABBREVIATIONS_BEFORE_NUMBER = frozenset(
    "art abs s no pos fig tab seite min max sek rev ver vers kapitel".split()
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"'»«“”’)\]]*(?=\s)")
_OPENERS = "\"'»«„“‚‘(["
_LETTER = re.compile(r"[^\W\d_]")
_DOTTED = re.compile(r"(?:[^\W\d_]{1,3}\.)+[^\W\d_]{0,3}")  # z.B, i.O, u.a, e.V
_ORDINAL = re.compile(r"\d{1,3}")  # "1. Schritt", "im 19. Jahrhundert"; years (4 digits) end
_ROMAN = re.compile(r"[IVXLC]{1,6}")  # "Heinrich IV."
_LINE = re.compile(r"[^\n]+")
_WORD = re.compile(r"\S+")
_NUMBER = re.compile(r"[±+\-–~≈<>≤≥]?\d[\d.,]*")


def _is_sentence_end(line: str, match: re.Match[str]) -> bool:
    j = match.end()
    while j < len(line) and line[j].isspace():
        j += 1
    while j < len(line) and line[j] in _OPENERS:
        j += 1
    if j >= len(line) or line[j].islower():
        return False
    if match.group().rstrip("\"'»«“”’)]") != ".":
        return True  # ! ? … and runs like "..." or "?!"
    before = line.rfind(" ", 0, match.start()) + 1
    word = line[before : match.start()].lstrip(_OPENERS)
    lowered = word.lower()
    if not word:
        return True
    if lowered in _ABBREVIATIONS or (line[j].isdigit() and lowered in _ABBREVIATIONS_BEFORE_NUMBER):
        return False
    return not any(p.fullmatch(word) for p in (_LETTER, _DOTTED, _ORDINAL, _ROMAN))


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the sentences in ``text[start:end]``, whitespace trimmed.

    Every line break is a boundary (list items, table-like text); within a line a sentence
    ends at ``.``, ``!``, ``?`` or ``…`` before whitespace and a non-lowercase character, unless
    the period closes an abbreviation ("z. B.", "ca.", "Nr.", "i.O.", "bzw."), an initial, an
    ordinal or list number ("1. ", "19. Jahrhundert") or a Roman numeral.
    """
    stop = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for line_match in _LINE.finditer(text, start, stop):
        line = line_match.group()
        base = line_match.start()
        cursor = 0
        for m in _SENTENCE_END.finditer(line):
            if _is_sentence_end(line, m):
                _add_trimmed(spans, line, base, cursor, m.end())
                cursor = m.end()
        _add_trimmed(spans, line, base, cursor, len(line))
    return spans


def _add_trimmed(spans: list[tuple[int, int]], line: str, base: int, a: int, b: int) -> None:
    piece = line[a:b]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        spans.append((base + a + lead, base + a + lead + len(stripped)))


def word_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Words of ``text[start:end]``, with a number and its short unit kept as one ("0,35 mm²")."""
    spans: list[tuple[int, int]] = []
    glue = False
    for m in _WORD.finditer(text, start, end):
        if glue and len(m.group()) <= 5:
            spans[-1] = (spans[-1][0], m.end())
            glue = False
            continue
        spans.append((m.start(), m.end()))
        glue = _NUMBER.fullmatch(m.group()) is not None
    return spans


def document_text(blocks: Sequence[Block]) -> str:
    """The string that chunk offsets index: block texts joined by a blank line."""
    return BLOCK_SEPARATOR.join(b.text for b in blocks)


# ---------------------------------------------------------------- internal structures

_AtomKind = Literal["heading", "prose", "thead", "row"]


@dataclass(slots=True)
class _Atom:
    """The smallest piece the packer moves: a heading, sentence, table line or word run."""

    kind: _AtomKind
    start: int
    end: int
    block: int
    path: tuple[str, ...]
    tokens: int = 0
    row: int | None = None


@dataclass(slots=True)
class _Unit:
    """Atoms of one block that should share a chunk when they fit together."""

    kind: Literal["heading", "prose", "table"]
    atoms: list[_Atom]

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.atoms)

    def first_need(self) -> int:
        """Tokens of the smallest piece this unit can open a chunk with."""
        if self.kind == "table":
            return sum(a.tokens for a in self.atoms[:2])
        return self.atoms[0].tokens


@dataclass(slots=True)
class _Draft:
    atoms: list[_Atom] = field(default_factory=list)
    tokens: int = 0
    carried: int = 0  # leading atoms repeated from the previous chunk (overlap)
    repeat: str = ""  # rows header, repeated before every chunk of a rows block
    repeat_tokens: int = 0
    head: _Atom | None = None  # the header line(s) of a table this chunk continues

    def add(self, atom: _Atom) -> None:
        self.atoms.append(atom)
        self.tokens += atom.tokens

    @property
    def fresh(self) -> bool:
        """Nothing but headings and overlap yet: starting another chunk would not help."""
        return all(a.kind == "heading" for a in self.atoms[self.carried :])

    @property
    def has_new(self) -> bool:
        return len(self.atoms) > self.carried


@dataclass(slots=True)
class _Group:
    """A section (or a ``rows`` block): chunks never cross a group boundary."""

    units: list[_Unit]
    rows_block: int | None = None
    rows_path: tuple[str, ...] = ()


# ---------------------------------------------------------------- the chunker


class Chunker:
    """Splits one document's blocks into chunks; deterministic and stateless between calls.

    ``tokenizer_json``: a model folder, its ``tokenizer.json``, or any :class:`TokenCounter`.
    ``max_tokens`` is the wanted chunk size; the effective :attr:`budget` is lower when the
    model's window (``max_seq_length`` minus special tokens and ``passage_prefix``) is smaller;
    ``max_seq_length`` is read from the model folder when a path is given and it is not.
    ``overlap_tokens`` (at most half the budget) of whole trailing sentences of a chunk open the
    next chunk of the same section; a single longer sentence is carried by its last words.
    ``section_level``: a heading of this level or higher (1 = H1) always starts a new chunk.
    """

    def __init__(
        self,
        tokenizer_json: Path | TokenCounter,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        *,
        heading_prefix: bool = DEFAULT_HEADING_PREFIX,
        max_seq_length: int | None = None,
        passage_prefix: str = "",
        section_level: int = 6,
    ) -> None:
        if isinstance(tokenizer_json, Path):
            self.counter: TokenCounter = TokenizerCounter(tokenizer_json)
            if max_seq_length is None:  # the model folder that holds the tokenizer knows it
                folder = tokenizer_json if tokenizer_json.is_dir() else tokenizer_json.parent
                max_seq_length = model_max_seq_length(folder)
        else:
            self.counter = tokenizer_json
        budget = max_tokens
        if max_seq_length is not None:
            reserved = self.counter.special_tokens
            if passage_prefix:
                reserved += self.counter.count([passage_prefix])[0]
            budget = min(budget, max_seq_length - reserved)
        if budget < 16:
            raise ValueError(f"a chunk budget of {budget} tokens is too small (minimum 16)")
        if overlap_tokens < 0:
            raise ValueError("overlap_tokens must be >= 0")
        self.budget = budget
        # Clamped, not rejected: the budget depends on the model, which a setting can't foresee.
        self.overlap_tokens = min(overlap_tokens, budget // 2)
        self.heading_prefix = heading_prefix
        self.section_level = section_level
        self._prefix_memo: dict[tuple[str, ...], tuple[str, int]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_model(
        cls,
        folder: Path,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        *,
        heading_prefix: bool = DEFAULT_HEADING_PREFIX,
        passage_prefix: str = "",
        section_level: int = 6,
    ) -> Chunker:
        """A chunker for a sentence-transformers model folder, capped at its window."""
        return cls(
            folder,
            max_tokens,
            overlap_tokens,
            heading_prefix=heading_prefix,
            max_seq_length=model_max_seq_length(folder),
            passage_prefix=passage_prefix,
            section_level=section_level,
        )

    # ------------------------------------------------------------ public

    def chunk(self, blocks: list[Block]) -> list[Chunk]:
        doc = document_text(blocks)
        groups = self._segment(blocks, doc)
        atoms = [a for g in groups for u in g.units for a in u.atoms]
        headers = [blocks[g.rows_block].header or "" for g in groups if g.rows_block is not None]
        counts = self.counter.count([doc[a.start : a.end] for a in atoms] + headers)
        for atom, n in zip(atoms, counts, strict=False):
            atom.tokens = n
        header_counts = iter(counts[len(atoms) :])

        rendered: list[_Draft] = []
        for n, group in enumerate(groups):
            if group.rows_block is not None:
                block = blocks[group.rows_block]
                drafts = self._pack_rows(group, doc, block.header or "", next(header_counts))
            else:
                if not any(u.kind != "heading" for u in group.units) and self._covered_by_next(
                    group, groups[n + 1 :]
                ):
                    continue
                drafts = self._pack(group.units, doc, self._body_budget(group))
            rendered.extend(drafts)
        chunks = [self._build(d, doc, blocks) for d in rendered]
        if not self.counter.additive:
            chunks = self._enforce(chunks, rendered, doc, blocks)
        for i, c in enumerate(chunks):
            c.index = i
        return chunks

    # ------------------------------------------------------------ segmentation

    def _segment(self, blocks: Sequence[Block], doc: str) -> list[_Group]:
        groups: list[_Group] = []
        units: list[_Unit] = []
        stack: list[tuple[int, str]] = []
        has_content = False
        location: tuple[str | None, int | None] | None = None
        offset = 0

        def flush() -> None:
            nonlocal units, has_content
            if units:
                groups.append(_Group(units))
            units, has_content = [], False

        for i, block in enumerate(blocks):
            start, offset = offset, offset + len(block.text) + len(BLOCK_SEPARATOR)
            if not block.text.strip():
                continue
            end = start + len(block.text)
            here = (block.sheet, block.slide)
            if has_content and here != location:
                flush()  # a chunk has one sheet and one slide
            location = here
            if block.kind == "heading":
                title = " ".join(block.text.split())
                level = min(max(block.level, 1), 6)
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, title))
                if has_content and level <= self.section_level:
                    flush()
                lo, hi = _trim(block.text, start) or (start, end)
                path = tuple(t for _, t in stack)
                units.append(_Unit("heading", [_Atom("heading", lo, hi, i, path)]))
                continue
            path = tuple(t for _, t in stack)
            if block.kind == "rows":
                flush()
                rows = [
                    _Atom("row", a, b, i, path, row=r) for r, a, b in _numbered_lines(block, start)
                ]
                groups.append(_Group([_Unit("table", rows)], rows_block=i, rows_path=path))
                continue
            if block.kind == "table":
                units.append(_Unit("table", _table_atoms(doc, start, end, i, path)))
            elif block.kind == "code":
                found = (_trim(m.group(), start + m.start()) for m in _LINE.finditer(block.text))
                spans = [span for span in found if span is not None]
                units.append(_Unit("prose", [_Atom("prose", a, b, i, path) for a, b in spans]))
            else:
                spans = sentence_spans(doc, start, end)
                units.append(_Unit("prose", [_Atom("prose", a, b, i, path) for a, b in spans]))
            has_content = True
        flush()
        return groups

    def _covered_by_next(self, group: _Group, rest: list[_Group]) -> bool:
        """A heading-only section is dropped when the next chunk's heading prefix names it."""
        if not self.heading_prefix or not rest:
            return False
        nxt = rest[0]
        content = [a for u in nxt.units for a in u.atoms if a.kind != "heading"]
        path = nxt.rows_path if nxt.rows_block is not None else content[0].path if content else ()
        return all(path[: len(a.path)] == a.path for u in group.units for a in u.atoms)

    # ------------------------------------------------------------ heading prefix

    def _prefix(self, path: tuple[str, ...]) -> tuple[str, int]:
        """The heading line for ``path``; its top levels are dropped if it would eat the chunk."""
        if not self.heading_prefix or not path:
            return "", 0
        with self._lock:
            memo = self._prefix_memo.get(path)
        if memo is not None:
            return memo
        result = ("", 0)
        for cut in range(len(path)):
            text = PATH_SEPARATOR.join(path[cut:]) + "\n"
            n = self.counter.count([text])[0]
            if n <= self.budget // 4:
                result = (text, n)
                break
        with self._lock:
            if len(self._prefix_memo) > 10_000:
                self._prefix_memo.clear()
            self._prefix_memo[path] = result
        return result

    def _body_budget(self, group: _Group) -> int:
        paths = {a.path for u in group.units for a in u.atoms}
        return self.budget - max((self._prefix(p)[1] for p in paths), default=0)

    @staticmethod
    def _path_of(draft: _Draft) -> tuple[str, ...]:
        content = [a for a in draft.atoms if a.kind != "heading"]
        return content[0].path if content else draft.atoms[-1].path

    # ------------------------------------------------------------ packing

    def _fit(self, atoms: list[_Atom], doc: str, limit: int) -> list[_Atom]:
        """Atoms no larger than ``limit``: oversized ones are cut at word boundaries."""
        out: list[_Atom] = []
        for atom in atoms:
            if atom.tokens <= limit:
                out.append(atom)
            else:
                out.extend(self._split_words(atom, doc, limit))
        return out

    def _split_words(self, atom: _Atom, doc: str, limit: int) -> list[_Atom]:
        words = word_spans(doc, atom.start, atom.end)
        counts = self.counter.count([doc[a:b] for a, b in words])
        pieces: list[_Atom] = []
        cur: list[tuple[int, int]] = []
        total = 0
        for (a, b), n in zip(words, counts, strict=True):
            if n > limit:  # one "word" longer than a chunk (a URL, a hash): cut by characters
                if cur:
                    pieces.append(self._piece(atom, cur[0][0], cur[-1][1], total))
                    cur, total = [], 0
                pieces.extend(self._split_chars(atom, doc, a, b, limit))
                continue
            if cur and total + n > limit:
                pieces.append(self._piece(atom, cur[0][0], cur[-1][1], total))
                cur, total = [], 0
            cur.append((a, b))
            total += n
        if cur:
            pieces.append(self._piece(atom, cur[0][0], cur[-1][1], total))
        return pieces

    def _split_chars(self, atom: _Atom, doc: str, a: int, b: int, limit: int) -> list[_Atom]:
        """Cut a space-free run ("a;b;c" CSV rows, URLs): after punctuation where possible."""
        pieces: list[_Atom] = []
        while a < b:
            lo, hi = a + 1, b
            while lo < hi:  # longest prefix that fits
                mid = (lo + hi + 1) // 2
                if self.counter.count([doc[a:mid]])[0] <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            if lo < b:
                cut = next((k for k in range(lo, a, -1) if not doc[k - 1].isalnum()), lo)
                lo = cut
            pieces.append(self._piece(atom, a, lo, self.counter.count([doc[a:lo]])[0]))
            a = lo
        return pieces

    @staticmethod
    def _piece(atom: _Atom, start: int, end: int, tokens: int) -> _Atom:
        return _Atom(atom.kind, start, end, atom.block, atom.path, tokens, atom.row)

    def _pack(self, units: list[_Unit], doc: str, budget: int) -> list[_Draft]:
        """Greedy packing of one section's units into drafts of at most ``budget`` tokens."""
        units = [self._fit_unit(u, doc, budget) for u in units]
        drafts: list[_Draft] = []
        cur = _Draft()

        def close(carry_for: int | None) -> _Draft:
            if cur.has_new:
                drafts.append(cur)
            if carry_for is None:
                return _Draft()
            return self._carry(cur, carry_for, budget, doc)

        for n, unit in enumerate(units):
            if unit.kind == "heading":
                need = unit.tokens + self._next_need(units, n + 1)
                if not cur.fresh and cur.tokens + need > budget:
                    cur = close(None)
                for atom in unit.atoms:  # several only if the heading alone overflows
                    if cur.tokens + atom.tokens > budget:
                        cur = close(None)
                    cur.add(atom)
                continue
            if unit.tokens <= budget - cur.tokens:
                for atom in unit.atoms:
                    cur.add(atom)
                continue
            if unit.tokens <= budget and not cur.fresh:
                cur = close(unit.tokens if unit.kind == "prose" else None)
                for atom in unit.atoms:
                    cur.add(atom)
                continue
            if unit.kind == "table":
                cur = self._pack_table(unit, cur, drafts, budget)
                continue
            for atom in unit.atoms:
                if cur.tokens + atom.tokens > budget:
                    cur = close(atom.tokens)
                cur.add(atom)
        close(None)
        return drafts

    def _fit_unit(self, unit: _Unit, doc: str, budget: int) -> _Unit:
        if unit.kind != "table" or unit.tokens <= budget:
            return _Unit(unit.kind, self._fit(unit.atoms, doc, budget))
        head = unit.atoms[0]
        if head.kind != "thead" or head.tokens > budget // 2:
            # No header worth repeating: the table is just lines.
            return _Unit("prose", self._fit(unit.atoms, doc, budget))
        return _Unit("table", [head, *self._fit(unit.atoms[1:], doc, budget - head.tokens)])

    @staticmethod
    def _next_need(units: list[_Unit], k: int) -> int:
        need = 0
        while k < len(units) and units[k].kind == "heading":
            need += units[k].tokens
            k += 1
        return need + (units[k].first_need() if k < len(units) else 0)

    def _pack_table(self, unit: _Unit, cur: _Draft, drafts: list[_Draft], budget: int) -> _Draft:
        """A table too big for the room left: by rows, its header repeated in each new chunk."""
        head, rows = unit.atoms[0], unit.atoms[1:]
        if not cur.fresh or cur.tokens + unit.first_need() > budget:
            if cur.has_new:
                drafts.append(cur)
            cur = _Draft()
        cur.add(head)
        for row in rows:
            if cur.tokens + row.tokens > budget:
                drafts.append(cur)
                cur = _Draft(tokens=head.tokens, repeat_tokens=head.tokens, head=head)
            cur.add(row)
        return cur

    def _carry(self, prev: _Draft, need: int, budget: int, doc: str) -> _Draft:
        """The overlap that opens the next chunk: whole trailing sentences of ``prev``."""
        limit = self.overlap_tokens
        if limit <= 0 or not prev.atoms or prev.atoms[-1].kind != "prose":
            return _Draft()
        carried: list[_Atom] = []
        total = 0
        for atom in reversed(prev.atoms):
            if atom.kind != "prose" or total + atom.tokens > limit:
                break
            carried.append(atom)
            total += atom.tokens
        carried.reverse()
        if not carried:  # one long last sentence: carry its last words instead
            last = prev.atoms[-1]
            words = word_spans(doc, last.start, last.end)
            counts = self.counter.count([doc[a:b] for a, b in words])
            start = last.end
            for (a, _), n in zip(reversed(words), reversed(counts), strict=True):
                if total + n > limit:
                    break
                start, total = a, total + n
            if start < last.end:
                carried = [self._piece(last, start, last.end, total)]
        while carried and total + need > budget:
            total -= carried.pop(0).tokens
        return _Draft(atoms=carried, tokens=total, carried=len(carried))

    def _pack_rows(self, group: _Group, doc: str, header: str, header_tokens: int) -> list[_Draft]:
        """Spreadsheet rows: never mixed with prose, the header line opens every chunk."""
        prefix_tokens = self._prefix(group.rows_path)[1]
        repeat = header.strip("\n")
        limit = self.budget - prefix_tokens - (header_tokens if repeat else 0)
        if limit < self.budget // 2:  # a huge header: repeat it nowhere rather than overflow
            repeat, header_tokens, limit = "", 0, self.budget - prefix_tokens
        rows = self._fit(group.units[0].atoms, doc, limit)
        drafts: list[_Draft] = []
        cur = _Draft()
        for row in rows:
            if cur.atoms and cur.tokens + row.tokens > limit:
                drafts.append(cur)
                cur = _Draft()
            cur.add(row)
        if cur.atoms:
            drafts.append(cur)
        for d in drafts:
            d.repeat, d.repeat_tokens = repeat, (header_tokens if repeat else 0)
            d.tokens += d.repeat_tokens
        return drafts

    # ------------------------------------------------------------ output

    def _build(self, draft: _Draft, doc: str, blocks: Sequence[Block]) -> Chunk:
        atoms = draft.atoms
        path = self._path_of(draft)
        has_content = any(a.kind != "heading" for a in atoms)
        prefix, prefix_tokens = self._prefix(path) if has_content else ("", 0)
        kept = atoms
        if prefix:
            k = 0
            while k < len(atoms) - 1 and atoms[k].kind == "heading":
                if path[: len(atoms[k].path)] != atoms[k].path:
                    break
                k += 1
            kept = atoms[k:]
        head = draft.head
        repeat = doc[head.start : head.end] if head is not None else draft.repeat
        body = doc[kept[0].start : kept[-1].end]
        pages = [p for p in (blocks[a.block].page for a in kept) if p is not None]
        rows = [a.row for a in kept if a.row is not None]
        first = blocks[next((a for a in kept if a.kind != "heading"), kept[0]).block]
        return Chunk(
            text=prefix + (repeat + "\n" if repeat else "") + body,
            index=0,
            heading_path=list(path),
            page=pages[0] if pages else None,
            page_end=pages[-1] if pages else None,
            sheet=first.sheet,
            row_start=rows[0] if rows else None,
            row_end=rows[-1] if rows else None,
            slide=first.slide,
            char_start=kept[0].start,
            char_end=kept[-1].end,
            tokens=prefix_tokens + draft.repeat_tokens + sum(a.tokens for a in kept),
        )

    def _enforce(
        self, chunks: list[Chunk], drafts: list[_Draft], doc: str, blocks: Sequence[Block]
    ) -> list[Chunk]:
        """Exact recount for tokenizers whose counts don't add up; re-split what overflows."""
        counts = self.counter.count([c.text for c in chunks])
        out: list[Chunk] = []
        for chunk, draft, n in zip(chunks, drafts, counts, strict=True):
            chunk.tokens = n
            out.extend([chunk] if n <= self.budget else self._resplit(draft, doc, blocks))
        return out

    def _resplit(self, draft: _Draft, doc: str, blocks: Sequence[Block]) -> list[Chunk]:
        atoms = draft.atoms[draft.carried :] or draft.atoms
        if len(atoms) == 1:
            atom = atoms[0]
            if atom.end - atom.start <= 1:
                return [self._build(draft, doc, blocks)]
            words = word_spans(doc, atom.start, atom.end)
            if len(words) > 1:
                mid = words[len(words) // 2][0]
                atoms = [
                    self._piece(atom, atom.start, words[len(words) // 2 - 1][1], 0),
                    self._piece(atom, mid, atom.end, 0),
                ]
            else:
                half = (atom.start + atom.end) // 2
                atoms = [
                    self._piece(atom, atom.start, half, 0),
                    self._piece(atom, half, atom.end, 0),
                ]
        out: list[Chunk] = []
        for part in (atoms[: len(atoms) // 2], atoms[len(atoms) // 2 :]):
            sub = _Draft(
                atoms=list(part),
                repeat=draft.repeat,
                repeat_tokens=draft.repeat_tokens,
                head=draft.head,
            )
            chunk = self._build(sub, doc, blocks)
            chunk.tokens = self.counter.count([chunk.text])[0]
            out.extend([chunk] if chunk.tokens <= self.budget else self._resplit(sub, doc, blocks))
        return out


def _numbered_lines(block: Block, start: int) -> Iterable[tuple[int, int, int]]:
    """``(row, start, end)`` of the non-blank lines of a ``rows`` block, rows 1-based."""
    row = block.row_start if block.row_start is not None else 1
    pos = start
    for line in block.text.split("\n"):
        span = _trim(line, pos)
        if span is not None:
            yield row, span[0], span[1]
        pos += len(line) + 1
        row += 1


def _trim(text: str, offset: int) -> tuple[int, int] | None:
    """Offsets of ``text`` (found at ``offset``) without surrounding whitespace, if any is left."""
    stripped = text.strip()
    if not stripped:
        return None
    lead = len(text) - len(text.lstrip())
    return offset + lead, offset + lead + len(stripped)


_TABLE_RULE = re.compile(r"\s*\|?\s*:?-{2,}.*")


def _table_atoms(doc: str, start: int, end: int, block: int, path: tuple[str, ...]) -> list[_Atom]:
    """Header line (plus a Markdown rule line under it) and one atom per row."""
    lines = [(start + m.start(), start + m.end()) for m in _LINE.finditer(doc[start:end])]
    lines = [(a, b) for a, b in lines if doc[a:b].strip()]
    head_end = 1
    if len(lines) > 1 and _TABLE_RULE.fullmatch(doc[lines[1][0] : lines[1][1]]):
        head_end = 2
    head = _Atom("thead", lines[0][0], lines[head_end - 1][1], block, path)
    return [head] + [_Atom("row", a, b, block, path) for a, b in lines[head_end:]]
