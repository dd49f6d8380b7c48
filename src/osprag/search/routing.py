"""Filters a query earns from its own text and from the store's state: tag routing and validity.

Both become clauses of the effective ``where`` (ANDed with the caller's filter and the
principal's clearance), so the dense leg (Chroma), the lexical leg (``where_eval``) and the
result cache key see exactly the same filter.

Tag routing: ``[QM] Lenkung von Dokumenten`` or ``QM: Lenkung von Dokumenten`` searches only
chunks whose ``tag`` or ``sub_tag`` is ``QM`` — when ``QM`` is a tag present in the searched
layers (and readable by the principal); anything else in brackets stays part of the query.

Validity: by default a query sees only documents in force today: status not in
``obsolete_statuses`` and ``valid_from`` not after today. Chroma compares numbers only with
range operators and stores ``valid_from`` as a date string, so the clause lists the values to
exclude, taken from the chunks actually stored: ``{"status": {"$nin": [...present obsolete
statuses]}}`` and ``{"valid_from": {"$nin": [...present future dates]}}``. ``$nin`` matches
records without the key, so a chunk without status or date stays visible. When nothing stored
would be excluded, no clause is added and the query stays unfiltered (Chroma's filtered
queries cost many times an unfiltered one).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from osprag.errors import InvalidInput

Where = dict[str, Any]
_TAG = r"([A-Za-z0-9ÄÖÜäöü][A-Za-z0-9ÄÖÜäöü_-]{0,15})"
_BRACKET = re.compile(r"\[" + _TAG + r"\]")
_PREFIX = re.compile(r"^\s*" + _TAG + r"\s*:(?=\s|$)")


@dataclass(frozen=True)
class LayerView:
    """What routing and validity need to know about the searched layers' chunks:
    value → lowest access level of the chunks carrying it, per metadata key."""

    values: Mapping[str, Mapping[Any, int]]

    def tags(self, clearance: int) -> set[str]:
        out: set[str] = set()
        for key in ("tag", "sub_tag"):
            out.update(
                str(v).upper()
                for v, level in self.values.get(key, {}).items()
                if isinstance(v, str) and level <= clearance
            )
        return out

    def validity_clause(self, obsolete: Iterable[str], today: str) -> Where | None:
        bad = set(obsolete)
        statuses = sorted(
            v for v in self.values.get("status", {}) if isinstance(v, str) and v in bad
        )
        future = sorted(
            v for v in self.values.get("valid_from", {}) if isinstance(v, str) and v > today
        )
        clauses: list[Where] = []
        if statuses:
            clauses.append({"status": {"$nin": statuses}})
        if future:
            clauses.append({"valid_from": {"$nin": future}})
        return and_all(clauses)


VIEW_KEYS = ("tag", "sub_tag", "status", "valid_from")


def today() -> str:
    return dt.date.today().isoformat()


def route(text: str, known: set[str]) -> tuple[str, list[str]]:
    """The query without its known tags, and those tags (upper-cased, in order)."""
    found: list[str] = []

    def take(match: re.Match[str]) -> str:
        tag = match.group(1).upper()
        if tag not in known:
            return match.group(0)
        found.append(tag)
        return " "

    rest = _BRACKET.sub(take, text)
    prefix = _PREFIX.match(rest)
    if prefix and prefix.group(1).upper() in known:
        found.append(prefix.group(1).upper())
        rest = rest[prefix.end() :]
    rest = " ".join(rest.split())
    if found and not rest:
        raise InvalidInput(
            f"the query {text!r} names only a tag",
            hint="add what to search for, e.g. '[QM] Lenkung von Dokumenten'",
        )
    return (rest, list(dict.fromkeys(found))) if found else (text, [])


def tag_clause(tags: Sequence[str]) -> Where | None:
    return and_all([{"$or": [{"tag": t}, {"sub_tag": t}]} for t in tags])


def and_all(clauses: Iterable[Where | None]) -> Where | None:
    parts = [c for c in clauses if c]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}
