"""Filter validation and clearance compilation (pure logic)."""

from __future__ import annotations

import pytest

from osprag import InvalidFilter, Principal
from osprag.filters import effective_where, validate_where, validate_where_document


def test_several_keys_become_and() -> None:
    assert validate_where({"a": 1, "b": {"$in": ["x", "y"]}}) == {
        "$and": [{"a": 1}, {"b": {"$in": ["x", "y"]}}]
    }
    assert validate_where({"$and": [{"a": 1}]}) == {"a": 1}
    assert validate_where({}) is None


@pytest.mark.parametrize(
    "where",
    [
        {"a": {"$like": "x"}},
        {"a": {"$gte": "2"}},
        {"a": {"$lt": True}},
        {"$and": []},
        {"$or": "x"},
        {"a": {"$in": []}},
        {"a": {"$in": [1, "1"]}},
        {"a": {"$eq": [1]}},
        {"a": {"$eq": 1, "$ne": 2}},
        {"$not": {"a": 1}},
        {"a": None},
        "status",
    ],
)
def test_invalid_where(where: object) -> None:
    with pytest.raises(InvalidFilter):
        validate_where(where)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "wd",
    [
        {"$has": "x"},
        {"$contains": ""},
        {"$contains": 3},
        {"$regex": "("},
        {},
        {"$contains": "a", "$regex": "b"},
    ],
)
def test_invalid_where_document(wd: object) -> None:
    with pytest.raises(InvalidFilter):
        validate_where_document(wd)  # type: ignore[arg-type]


def test_clearance_always_anded() -> None:
    p = Principal("p", 2)
    assert effective_where(None, p) == {"access_level": {"$lte": 2}}
    assert effective_where({"$or": [{"a": 1}, {"b": 2}]}, p) == {
        "$and": [{"access_level": {"$lte": 2}}, {"$or": [{"a": 1}, {"b": 2}]}]
    }
    assert effective_where({"a": 1}, Principal("admin", 4)) == {"a": 1}
