"""The result cache: hits for repeated queries, never a stale hit after a write, never a hit
across clearances (both storage modes); LRU and TTL as pure logic."""

from __future__ import annotations

import pytest

from osprag import KnowledgeBase, Principal
from osprag.results import Hit, QueryResult
from osprag.search.cache import ResultCache, normalise_query


def test_repeated_query_is_a_hit_and_a_write_invalidates_it(kb: KnowledgeBase) -> None:
    kb.add("kern", ["Prüfmittel werden jährlich kalibriert."], ids=["k1"])
    kb.add("erweitert", ["VDA 5 beschreibt die Prüfprozesseignung."], ids=["e1"])
    first = kb.query("Prüfmittel kalibriert", n_results=3)
    again = kb.query("  Prüfmittel   kalibriert ", n_results=3)
    assert [h.id for h in again.hits] == [h.id for h in first.hits]
    assert again.query == "  Prüfmittel   kalibriert "
    assert "cache" in again.timings_ms
    stats = kb.cache_stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    # other parameters are other keys
    kb.query("Prüfmittel kalibriert", n_results=2)
    assert kb.cache_stats()["misses"] == 2
    # a write to a layer the query involved: recomputed, the new record is found
    kb.add("erweitert", ["Prüfmittel kalibriert man nach DAkkS."], ids=["e2"])
    after = kb.query("Prüfmittel kalibriert", n_results=3)
    assert "e2" in [h.id for h in after.hits]
    assert kb.cache_stats()["hits"] == 1
    # a write to a layer the query did not search keeps its entry
    kern_only = kb.query("Prüfmittel", layers="kern")
    kb.add("erweitert", ["noch ein Text"], ids=["e3"])
    assert kb.query("Prüfmittel", layers="kern").hits == kern_only.hits
    assert kb.cache_stats()["hits"] == 2


def test_no_hit_across_clearances(kb: KnowledgeBase) -> None:
    kb.add(
        "kern",
        ["Geheime Reklamationskosten 2025", "Öffentliche Reklamationsstatistik"],
        ids=["secret", "public"],
        metadatas=[{"access_level": 3}, {"access_level": 1}],
    )
    top = kb.query("Reklamation", principal=Principal("boss", 4))
    assert {h.id for h in top.hits} == {"secret", "public"}
    low = kb.query("Reklamation", principal=Principal("guest", 1))
    assert [h.id for h in low.hits] == ["public"]
    assert kb.cache_stats()["hits"] == 0
    assert [h.id for h in kb.query("Reklamation", principal=Principal("x", 1)).hits] == ["public"]
    assert kb.cache_stats()["hits"] == 1


def test_cache_can_be_switched_off(kb: KnowledgeBase) -> None:
    kb.add("kern", ["Lenkungsplan"], ids=["a"])
    kb.query("Lenkungsplan", use_cache=False)
    kb.query("Lenkungsplan", use_cache=False)
    assert kb.cache_stats()["hits"] == 0 and kb.cache_stats()["entries"] == 0


def _result(q: str) -> QueryResult:
    return QueryResult(q, [Hit("a", "kern", "t", {"source": "a.md", "tags": ["QM"]}, None, 1.0, 1)])


def test_lru_and_ttl() -> None:
    now = [0.0]
    cache = ResultCache(2, ttl=10, clock=lambda: now[0])
    cache.put("a", _result("a"))
    cache.put("b", _result("b"))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _result("c"))
    assert cache.get("b") is None and cache.get("c") is not None
    now[0] = 11
    assert cache.get("a") is None
    stats = cache.stats()
    assert (stats["evicted"], stats["expired"], stats["hits"]) == (1, 1, 2)


def test_cached_results_are_copies() -> None:
    cache = ResultCache(4, ttl=10)
    cache.put("k", _result("q"))
    got = cache.get("k")
    assert got is not None
    got.hits[0].metadata["source"] = "changed"
    got.hits[0].metadata["tags"].append("X")
    got.hits.clear()
    again = cache.get("k")
    assert again is not None and len(again.hits) == 1
    assert again.hits[0].metadata == {"source": "a.md", "tags": ["QM"]}


@pytest.mark.parametrize(
    ("raw", "norm"), [("  a   b ", "a b"), ("Prüfung", "Prüfung"), ("Pru\u0308fung", "Prüfung")]
)
def test_query_normalisation(raw: str, norm: str) -> None:
    assert normalise_query(raw) == norm
