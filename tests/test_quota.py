"""Per-layer minimums in the merged ranking."""

from __future__ import annotations

import pytest

from osprag import KnowledgeBase
from osprag.errors import InvalidInput
from osprag.search.quota import Ranked, apply_minimums, layer_minimums


def _ranked(spec: str) -> list[Ranked]:
    """'eekek' → best first, e = erweitert, k = kern."""
    out = []
    for i, c in enumerate(spec):
        layer = "kern" if c == "k" else "erweitert"
        score = 1.0 - i / 10
        out.append((score, 0, f"{c}{i}", (layer, f"{c}{i}"), score))
    return out


@pytest.mark.parametrize(
    ("spec", "n", "mins", "want"),
    [
        ("eeekk", 3, {"kern": 2}, ["e0", "k3", "k4"]),
        ("eeek", 3, {"kern": 2}, ["e0", "e1", "k3"]),  # only one kern qualifies
        ("keee", 3, {"kern": 2}, ["k0", "e1", "e2"]),  # none left to promote
        ("eeekk", 3, {}, ["e0", "e1", "e2"]),
        ("eeekk", 3, {"kern": 2, "erweitert": 2}, ["e0", "e1", "k3"]),
    ],
)
def test_apply_minimums(spec: str, n: int, mins: dict[str, int], want: list[str]) -> None:
    assert [t[2] for t in apply_minimums(_ranked(spec), n, mins)] == want


def test_layer_minimums_validate() -> None:
    conf = {"kern": 1, "erweitert": 0}
    assert layer_minimums(["kern", "erweitert"], conf, None) == {"kern": 1}
    assert layer_minimums(["kern"], conf, {"kern": 0}) == {}
    with pytest.raises(InvalidInput, match="unknown layer"):
        layer_minimums(["kern"], conf, {"archiv": 1})
    with pytest.raises(InvalidInput, match=">= 0"):
        layer_minimums(["kern"], conf, {"kern": -1})


def test_query_layer_min(kb: KnowledgeBase) -> None:
    kb.add("erweitert", [f"Prüfplan Crimpen Variante {i}" for i in range(4)])
    kb.add("kern", ["Prüfplan", "Crimpen Arbeitsanweisung"], ids=["k1", "k2"])
    plain = kb.query("Prüfplan Crimpen Variante", mode="lexical", n_results=3)
    assert [h.layer for h in plain.hits] == ["erweitert"] * 3
    mixed = kb.query(
        "Prüfplan Crimpen Variante", mode="lexical", n_results=3, layer_min={"kern": 2}
    )
    assert sorted(h.id for h in mixed.hits if h.layer == "kern") == ["k1", "k2"]
    assert [h.rank for h in mixed.hits] == [1, 2, 3]
    assert mixed.hits[0].layer == "erweitert"
