"""where_eval against chromadb itself: random records, random filters, the same ids or both
refuse. Plus the corner cases that the differential test found or that document a rule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import chromadb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osprag.errors import InvalidFilter
from osprag.search.where_eval import compile_where, matches

KEYS = ["a", "b", "c"]
BIG = 2**53
INTS = st.sampled_from([-2, -1, 0, 1, 2, 3, BIG, BIG + 1, -BIG - 1])
FLOATS = st.sampled_from([-2.5, -1.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5, 2.0, float(BIG), 1e30])
STRINGS = st.sampled_from(["", "a", "b", "1", "1.0", "true", "ä", "A"])
BOOLS = st.booleans()
SCALARS = st.one_of(INTS, FLOATS, STRINGS, BOOLS)

RECORDS = st.lists(
    st.dictionaries(st.sampled_from(KEYS), SCALARS, min_size=1, max_size=3),
    min_size=1,
    max_size=12,
)


def _leaf() -> st.SearchStrategy[Any]:
    key = st.sampled_from(KEYS)
    same_type_list = st.one_of(
        st.lists(INTS, min_size=1, max_size=3),
        st.lists(FLOATS, min_size=1, max_size=3),
        st.lists(STRINGS, min_size=1, max_size=3),
        st.lists(BOOLS, min_size=1, max_size=2),
    )
    any_list = st.one_of(same_type_list, st.lists(SCALARS, min_size=0, max_size=3))
    op_value = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne"]), SCALARS),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.one_of(INTS, FLOATS)),
        st.tuples(st.sampled_from(["$gt", "$lt"]), st.one_of(STRINGS, BOOLS)),  # invalid
        st.tuples(st.sampled_from(["$in", "$nin"]), any_list),
        st.tuples(st.sampled_from(["$contains", "$not_contains"]), SCALARS),
    )
    explicit = st.builds(lambda k, ov: {k: {ov[0]: ov[1]}}, key, op_value)
    implicit = st.builds(lambda k, v: {k: v}, key, SCALARS)
    return st.one_of(explicit, implicit)


FILTERS = st.recursive(
    _leaf(),
    lambda children: st.builds(
        lambda op, parts: {op: parts},
        st.sampled_from(["$and", "$or"]),
        st.lists(children, min_size=2, max_size=3),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def collection() -> Iterator[Any]:
    client = chromadb.EphemeralClient()
    name = f"where-eval-{uuid.uuid4().hex[:8]}"
    coll = client.create_collection(
        name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )
    yield coll
    client.delete_collection(name)


def _chroma_ids(coll: Any, where: dict[str, Any]) -> set[str] | None:
    try:
        return set(coll.get(where=where, include=[])["ids"])
    except Exception:  # chromadb raises ValueError or its own InvalidArgumentError
        return None


def _our_ids(records: list[dict[str, Any]], where: dict[str, Any]) -> set[str] | None:
    try:
        predicate = compile_where(where)
    except InvalidFilter:
        return None
    return {f"r{i}" for i, meta in enumerate(records) if predicate(meta)}


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=RECORDS, where=FILTERS)
def test_same_ids_as_chromadb(collection: Any, records: list[dict[str, Any]], where: Any) -> None:
    existing = collection.get(include=[])["ids"]
    if existing:
        collection.delete(ids=existing)
    ids = [f"r{i}" for i in range(len(records))]
    collection.add(ids=ids, metadatas=records, embeddings=[[1.0, 0.0]] * len(records))
    assert _our_ids(records, where) == _chroma_ids(collection, where)


@pytest.mark.parametrize(
    ("where", "meta", "expected"),
    [
        ({"v": 1}, {"v": 1.0}, True),
        ({"v": True}, {"v": 1}, False),
        ({"v": 1}, {"v": True}, False),
        ({"v": "1"}, {"v": 1}, False),
        ({"v": {"$ne": 1}}, {}, True),
        ({"v": {"$nin": ["x"]}}, {"w": 1}, True),
        ({"v": {"$in": ["x"]}}, {}, False),
        ({"v": 1.5}, {"v": 1}, True),  # float operand truncated for int values
        ({"v": -1.5}, {"v": -1}, True),
        ({"v": {"$gt": -0.5}}, {"v": 0}, False),
        ({"v": BIG + 1}, {"v": float(BIG)}, True),  # int operand widened for float values
        ({"v": float(BIG)}, {"v": BIG + 1}, False),
        ({"v": {"$lt": 5}}, {"v": "a"}, False),
        ({"v": {"$contains": "a"}}, {"v": "a"}, False),
        ({"v": {"$not_contains": "a"}}, {"v": "a"}, True),
        ({"$or": [{"v": 1}, {"w": {"$gte": 2}}]}, {"w": 2.5}, True),
        ({"$and": [{"v": 1}, {"w": {"$gte": 2}}]}, {"v": 1, "w": 1}, False),
    ],
)
def test_rules(where: dict[str, Any], meta: dict[str, Any], expected: bool) -> None:
    assert matches(where, meta) is expected


@pytest.mark.parametrize(
    "where",
    [
        {},
        {"a": 1, "b": 2},
        {"$and": [{"a": 1}]},
        {"$or": []},
        {"a": {"$gt": "x"}},
        {"a": {"$gt": True}},
        {"a": {"$in": []}},
        {"a": {"$in": [1, True]}},
        {"a": {"$in": [1, 1.5]}},
        {"a": {"$eq": [1]}},
        {"a": None},
        {"a": {"$gt": 1, "$lt": 3}},
        {"a": {"$regex": "x"}},
        {"$foo": 1},
        {"#document": {"$contains": "x"}},
        {"a": {"$gt": float("inf")}},
        {"a": 2**64},
        "a = 1",
    ],
)
def test_invalid_filters_are_refused(where: Any) -> None:
    with pytest.raises(InvalidFilter):
        compile_where(where)


def test_none_matches_everything() -> None:
    assert compile_where(None)({}) is True
