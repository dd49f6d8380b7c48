"""Filter validation and the clearance clause.

Filters are checked before anything runs, with messages that name the offending part, because
Chroma either raises deep inside a query or, worse, silently returns nothing (a number never
equals a string). The principal's clearance is compiled into the effective filter here, once,
before any cache key or retrieval path sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidFilter
from .principal import Principal

Where = dict[str, Any]

_COMPARE = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"}
_RANGE = {"$gt", "$gte", "$lt", "$lte"}
_LIST = {"$in", "$nin"}
_LOGIC = {"$and", "$or"}
_DOC_OPS = {"$contains", "$not_contains", "$regex", "$not_regex"}


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _check_field(key: str, cond: Any, path: str) -> Where:
    if not isinstance(key, str) or not key or key.startswith("$"):
        raise InvalidFilter(f"{path}: unknown operator {key!r}", hint=_ops_hint())
    if _is_scalar(cond):
        return {key: cond}
    if not isinstance(cond, Mapping) or len(cond) != 1:
        raise InvalidFilter(
            f"{path}.{key}: expected a value or one operator like {{'$eq': ...}}, got {cond!r}"
        )
    ((op, value),) = cond.items()
    if op in _RANGE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidFilter(
                f"{path}.{key}.{op} needs a number, got {value!r}",
                hint="range operators compare numbers only; strings like versions use $eq/$in",
            )
    elif op in _COMPARE:
        if not _is_scalar(value):
            raise InvalidFilter(f"{path}.{key}.{op} needs a str, int, float or bool")
    elif op in _LIST:
        if not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value):
            raise InvalidFilter(f"{path}.{key}.{op} needs a non-empty list of scalars")
        if len({type(v) for v in value}) > 1:
            raise InvalidFilter(f"{path}.{key}.{op} list mixes types: {value!r}")
    else:
        raise InvalidFilter(f"{path}.{key}: unknown operator {op!r}", hint=_ops_hint())
    return {key: {op: value}}


def _ops_hint() -> str:
    return "operators: " + ", ".join(sorted(_COMPARE | _LIST | _LOGIC))


def validate_where(where: Mapping[str, Any] | None, path: str = "where") -> Where | None:
    """A normalised copy (several top-level keys become ``$and``) or ``InvalidFilter``."""
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise InvalidFilter(f"{path} must be an object, got {type(where).__name__}")
    if not where:
        return None
    clauses: list[Where] = []
    for key, cond in where.items():
        if key in _LOGIC:
            if not isinstance(cond, list) or not cond:
                raise InvalidFilter(f"{path}.{key} needs a non-empty list of filters")
            subs = [validate_where(c, f"{path}.{key}[{i}]") for i, c in enumerate(cond)]
            parts = [s for s in subs if s]
            if not parts:
                raise InvalidFilter(f"{path}.{key} has only empty filters")
            clauses.append(parts[0] if len(parts) == 1 else {key: parts})
        else:
            clauses.append(_check_field(key, cond, path))
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def validate_where_document(
    where_document: Mapping[str, Any] | None, path: str = "where_document"
) -> Where | None:
    if where_document is None:
        return None
    if not isinstance(where_document, Mapping) or len(where_document) != 1:
        raise InvalidFilter(f"{path} needs exactly one operator, e.g. {{'$contains': 'Crimphöhe'}}")
    ((op, value),) = where_document.items()
    if op in _LOGIC:
        if not isinstance(value, list) or not value:
            raise InvalidFilter(f"{path}.{op} needs a non-empty list")
        parts = [validate_where_document(v, f"{path}.{op}[{i}]") for i, v in enumerate(value)]
        clean = [p for p in parts if p]
        return clean[0] if len(clean) == 1 else {op: clean}
    if op not in _DOC_OPS:
        raise InvalidFilter(
            f"{path}: unknown operator {op!r}",
            hint="use " + ", ".join(sorted(_DOC_OPS | _LOGIC)),
        )
    if not isinstance(value, str) or not value:
        raise InvalidFilter(f"{path}.{op} needs a non-empty string")
    if op in ("$regex", "$not_regex"):
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise InvalidFilter(f"{path}.{op}: invalid regular expression: {exc}") from None
    return {op: value}


def clearance_clause(principal: Principal) -> Where | None:
    """Nothing for full clearance: every stored chunk has a level ≤ 4, and Chroma's filtered
    queries cost many times an unfiltered one."""
    if principal.clearance >= 4:
        return None
    return {"access_level": {"$lte": principal.clearance}}


def effective_where(where: Mapping[str, Any] | None, principal: Principal) -> Where | None:
    """The user's filter, validated, AND the principal's clearance: no user filter can widen it."""
    user = validate_where(where)
    clause = clearance_clause(principal)
    if clause is None:
        return user
    if user is None:
        return clause
    return {"$and": [clause, user]}
