"""Chroma ``where`` filters evaluated in Python, with chromadb 1.5.9's exact semantics.

The lexical index filters its own candidates, and a chunk must pass or fail a filter there
exactly as it does in Chroma, or the fused ranking leaks or loses chunks. The rules below were
read off chromadb 1.5.9 (Python validation plus its Rust executor) and are checked by a
differential Hypothesis test against a real collection (tests/test_where_eval.py):

* A filter has exactly one key; ``$and``/``$or`` take a list of at least two filters.
* A scalar is an implicit ``$eq``. Strings only ever equal strings, booleans only booleans;
  ``True`` is not ``1``.
* Numbers compare across int and float, asymmetrically: an int operand is widened to float for
  float values (``2**53 + 1`` equals ``2.0**53``); a float operand is truncated toward zero
  (saturating) for int values, so ``{"v": 1.5}`` matches ``v = 1`` and ``{"v": {"$gt": -0.5}}``
  does not match ``v = 0``.
* ``$gt``/``$gte``/``$lt``/``$lte`` need an int or float operand (not a bool, not a string) and
  never match a string or bool value.
* ``$ne`` and ``$nin`` are the negations of ``$eq`` and ``$in``: they also match records that
  lack the key.
* ``$in``/``$nin`` lists are non-empty and of one type (an int list may not hold a bool).
* ``$contains``/``$not_contains`` test array values; on the scalar values osprag stores,
  ``$contains`` never matches and ``$not_contains`` always does.

Deliberately unsupported (``InvalidFilter``): ``#document``/``#id`` keys and integers outside the
signed 64-bit range, which Chroma handles inconsistently or rejects.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from osprag.errors import InvalidFilter

Predicate = Callable[[Mapping[str, Any]], bool]

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_RANGE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$contains", "$not_contains", *_RANGE)
_MISSING = object()


def compile_where(where: Mapping[str, Any] | None) -> Predicate:
    """A predicate over one metadata dict; ``None`` matches everything.

    Raises ``InvalidFilter`` for every filter Chroma would reject, so a filter that works here
    works on the dense leg too.
    """
    if where is None:
        return _always
    return _compile(where, "where")


def matches(where: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
    """Convenience for one record; compile once with ``compile_where`` for many."""
    return compile_where(where)(metadata)


def _always(metadata: Mapping[str, Any]) -> bool:
    return True


def _compile(where: Any, path: str) -> Predicate:
    if not isinstance(where, Mapping):
        raise InvalidFilter(f"{path} must be an object, got {type(where).__name__}")
    if len(where) != 1:
        raise InvalidFilter(
            f"{path} needs exactly one key, got {len(where)}",
            hint="combine conditions with {'$and': [...]}",
        )
    ((key, value),) = where.items()
    if not isinstance(key, str):
        raise InvalidFilter(f"{path}: keys are strings, got {key!r}")
    if key in ("$and", "$or"):
        if not isinstance(value, list) or len(value) < 2:
            raise InvalidFilter(f"{path}.{key} needs a list of at least two filters")
        parts = [_compile(sub, f"{path}.{key}[{i}]") for i, sub in enumerate(value)]
        if key == "$and":
            return lambda m: all(p(m) for p in parts)
        return lambda m: any(p(m) for p in parts)
    if key.startswith(("$", "#")):
        raise InvalidFilter(f"{path}: unsupported key {key!r}", hint="use a metadata field name")
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise InvalidFilter(f"{path}.{key} needs exactly one operator, got {len(value)}")
        ((op, operand),) = value.items()
        return _field(key, op, operand, f"{path}.{key}")
    if _is_scalar(value):
        return _field(key, "$eq", value, f"{path}.{key}")
    raise InvalidFilter(f"{path}.{key}: expected a str, int, float, bool or operator object")


def _field(key: str, op: Any, operand: Any, path: str) -> Predicate:
    if op not in _OPERATORS:
        raise InvalidFilter(f"{path}: unknown operator {op!r}", hint=", ".join(_OPERATORS))
    if op in _RANGE:
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise InvalidFilter(f"{path}.{op} compares numbers only, got {operand!r}")
        _check_number(operand, path)
        compare = _RANGE[op]
        return lambda m: _numeric(compare, operand, m.get(key, _MISSING))
    if op in ("$in", "$nin"):
        options = _check_list(operand, f"{path}.{op}")
        if op == "$in":
            return lambda m: _contains_equal(options, m.get(key, _MISSING))
        return lambda m: not _contains_equal(options, m.get(key, _MISSING))
    if not _is_scalar(operand):
        raise InvalidFilter(f"{path}.{op} needs a str, int, float or bool, got {operand!r}")
    _check_number(operand, path)
    if op == "$eq":
        return lambda m: _equal(operand, m.get(key, _MISSING))
    if op == "$ne":
        return lambda m: not _equal(operand, m.get(key, _MISSING))
    if op == "$contains":
        return lambda m: _array_contains(operand, m.get(key, _MISSING))
    return lambda m: not _array_contains(operand, m.get(key, _MISSING))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float)


def _check_number(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilter(f"{path}: {value!r} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool):
        if not _I64_MIN <= value <= _I64_MAX:
            raise InvalidFilter(f"{path}: {value} is outside the signed 64-bit range")


def _check_list(operand: Any, path: str) -> list[Any]:
    if not isinstance(operand, list) or not operand:
        raise InvalidFilter(f"{path} needs a non-empty list")
    first = type(operand[0])
    if not all(_is_scalar(v) for v in operand):
        raise InvalidFilter(f"{path} holds a value that is not a str, int, float or bool")
    kinds = {type(v) for v in operand}
    if not all(isinstance(v, first) for v in operand) or len(kinds) > 1:
        raise InvalidFilter(f"{path} mixes types: {operand!r}")
    for value in operand:
        _check_number(value, path)
    return list(operand)


def _truncate(value: float) -> int:
    """Rust's ``f64 as i64``: toward zero, saturating at the i64 bounds."""
    return max(_I64_MIN, min(_I64_MAX, math.trunc(value)))


def _numeric(compare: Callable[[Any, Any], bool], operand: int | float, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(operand, int):
        return compare(value, operand if isinstance(value, int) else float(operand))
    return compare(value, operand if isinstance(value, float) else _truncate(operand))


def _equal(operand: Any, value: Any) -> bool:
    if isinstance(operand, bool) or isinstance(value, bool):
        return isinstance(operand, bool) and isinstance(value, bool) and operand == value
    if isinstance(operand, str) or isinstance(value, str):
        return isinstance(operand, str) and isinstance(value, str) and operand == value
    return _numeric(operator.eq, operand, value)


def _contains_equal(options: list[Any], value: Any) -> bool:
    return any(_equal(option, value) for option in options)


def _array_contains(operand: Any, value: Any) -> bool:
    if isinstance(value, list):
        return any(_equal(operand, item) for item in value)
    return False
