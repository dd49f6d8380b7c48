"""A customer-editable glossary of abbreviations and synonyms that expands lexical queries.

The file is TOML; each ``[[group]]`` lists terms that mean the same thing (an optional
``weight`` in (0, 1] scales that group's expansions)::

    [[group]]
    terms = ["EMPB", "Erstmusterprüfbericht", "PPF", "PPAP"]

A query that contains one term of a group (case-insensitive, as a whole token: ``i.O.`` does
not match inside ``n.i.O.``) is expanded with the group's other terms, in the lexical leg only
(the dense leg sees synonyms by itself). A matched group's expansions share ``glossary_weight``
(and within one expansion its terms share that expansion's part), so all expansions of a term
together weigh less than the term the user typed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from osprag.errors import ConfigError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "glossary.toml"
_HINT = 'each [[group]] needs terms = ["ABK", "Langform", ...] (at least two strings)'


@dataclass(frozen=True)
class Glossary:
    groups: tuple[tuple[tuple[str, ...], float], ...]
    source: str

    def __post_init__(self) -> None:
        groups_of: dict[str, list[int]] = {}
        for gi, (terms, _) in enumerate(self.groups):
            for term in terms:
                groups_of.setdefault(term.casefold(), []).append(gi)
        # longest first, so "n.i.O." wins over "i.O." at the same place
        alternation = "|".join(re.escape(t) for t in sorted(groups_of, key=len, reverse=True))
        regex = re.compile(rf"(?<![\w.])(?:{alternation})(?![\w])", re.IGNORECASE)
        object.__setattr__(self, "_regex", regex if groups_of else None)
        object.__setattr__(self, "_groups_of", groups_of)

    def expansions(self, text: str, weight: float) -> dict[str, float]:
        """Other terms of every group the query mentions → their weight."""
        regex: re.Pattern[str] | None = self.__dict__["_regex"]
        if regex is None:
            return {}
        groups_of: dict[str, list[int]] = self.__dict__["_groups_of"]
        lowered = text.casefold()
        out: dict[str, float] = {}
        for match in regex.finditer(text):
            for gi in groups_of[match.group(0).casefold()]:
                terms, group_weight = self.groups[gi]
                others = [t for t in terms if t.casefold() not in lowered]
                for term in others:  # the group's expansions share its weight
                    share = weight * group_weight / len(others)
                    out[term] = max(out.get(term, 0.0), share)
        return out


def parse_glossary(data: Mapping[str, Any], source: str) -> Glossary:
    unknown = sorted(set(data) - {"group"})
    if unknown:
        raise ConfigError(f"glossary {source}: unknown key(s) {', '.join(unknown)}", hint=_HINT)
    groups_raw = data.get("group", [])
    if not isinstance(groups_raw, list):
        raise ConfigError(f"glossary {source}: 'group' must be a list of tables", hint=_HINT)
    groups = []
    for i, group in enumerate(groups_raw, 1):
        where = f"glossary {source}: group {i}"
        if not isinstance(group, dict) or set(group) - {"terms", "weight"}:
            raise ConfigError(f"{where} may only have 'terms' and 'weight'", hint=_HINT)
        terms = group.get("terms")
        if (
            not isinstance(terms, list)
            or len(terms) < 2
            or not all(isinstance(t, str) and t.strip() for t in terms)
        ):
            raise ConfigError(f"{where}: terms must be a list of at least two strings", hint=_HINT)
        weight = group.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1:
            raise ConfigError(f"{where}: weight must be a number in (0, 1], got {weight!r}")
        groups.append((tuple(dict.fromkeys(t.strip() for t in terms)), float(weight)))
    return Glossary(tuple(groups), source)


def load_glossary(path: Path | None) -> Glossary:
    """The glossary at ``path`` (default: the shipped one) or one ``ConfigError``."""
    path = path or DEFAULT_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"glossary file {path} does not exist", hint="fix OSP_GLOSSARY_PATH"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"glossary file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"glossary file {path} is not valid TOML: {exc}", hint=_HINT) from None
    return parse_glossary(data, str(path))
