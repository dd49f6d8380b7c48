"""Tag routing and validity: clauses compiled into the effective filter, applied alike by the
dense leg (Chroma) and the lexical leg (where_eval), switchable per query and by setting."""

from __future__ import annotations

import datetime as dt

import pytest

from osprag import KnowledgeBase, Principal
from osprag.errors import InvalidInput
from osprag.search.routing import LayerView, route, tag_clause

FUTURE = (dt.date.today() + dt.timedelta(days=30)).isoformat()
PAST = "2024-01-01"


@pytest.mark.parametrize(
    ("text", "rest", "tags"),
    [
        ("[QM] Lenkung von Dokumenten", "Lenkung von Dokumenten", ["QM"]),
        ("QM: Lenkung von Dokumenten", "Lenkung von Dokumenten", ["QM"]),
        ("Lenkung [qm][FMEA] Dokumente", "Lenkung Dokumente", ["QM", "FMEA"]),
        ("[XYZ] Lenkung", "[XYZ] Lenkung", []),  # unknown tags stay text
        ("Hinweis: Lenkung", "Hinweis: Lenkung", []),
        ("Was ist QM: ein Handbuch?", "Was ist QM: ein Handbuch?", []),  # only a leading prefix
    ],
)
def test_route(text: str, rest: str, tags: list[str]) -> None:
    assert route(text, {"QM", "FMEA"}) == (rest, tags)


def test_a_query_of_only_a_tag_is_refused() -> None:
    with pytest.raises(InvalidInput, match="only a tag"):
        route("[QM]", {"QM"})


def test_clauses() -> None:
    assert tag_clause([]) is None
    assert tag_clause(["QM"]) == {"$or": [{"tag": "QM"}, {"sub_tag": "QM"}]}
    view = LayerView(
        {
            "status": {"AKTIV": 1, "OBSOLET": 2},
            "valid_from": {PAST: 1, FUTURE: 3},
            "tag": {"QM": 1, "HR": 3},
            "sub_tag": {"FMEA": 2},
        }
    )
    today = dt.date.today().isoformat()
    assert view.validity_clause(["OBSOLET"], today) == {
        "$and": [{"status": {"$nin": ["OBSOLET"]}}, {"valid_from": {"$nin": [FUTURE]}}]
    }
    assert LayerView({"status": {"AKTIV": 1}}).validity_clause(["OBSOLET"], today) is None
    assert view.tags(2) == {"QM", "FMEA"}  # a tag only on chunks above the clearance is unknown


@pytest.fixture
def qm(kb: KnowledgeBase) -> KnowledgeBase:
    kb.add(
        "kern",
        [
            "Prüfanweisung Crimpkontakt aktuelle Fassung",
            "Prüfanweisung Crimpkontakt alte Fassung",
            "Prüfanweisung Crimpkontakt künftige Fassung",
            "Prüfanweisung Crimpkontakt ohne Status",
        ],
        ids=["aktiv", "obsolet", "kuenftig", "ohne"],
        metadatas=[
            {"status": "AKTIV", "version": "3.0", "valid_from": PAST, "tag": "QM"},
            {"status": "obsolet", "version": "2.0", "valid_from": "2020-01-01", "tag": "QM"},
            {"status": "AKTIV", "version": "4.0", "valid_from": FUTURE, "tag": "PRD"},
            {"sub_tag": "FMEA"},
        ],
    )
    return kb


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_only_valid_documents_by_default(qm: KnowledgeBase, mode: str) -> None:
    hits = qm.query("Prüfanweisung Crimpkontakt", mode=mode, n_results=10).hits
    assert {h.id for h in hits} == {"aktiv", "ohne"}
    history = qm.query(
        "Prüfanweisung Crimpkontakt", mode=mode, n_results=10, include_history=True
    ).hits
    assert {h.id for h in history} == {"aktiv", "obsolet", "kuenftig", "ohne"}
    shown = {h.id: (h.metadata.get("version"), h.metadata.get("valid_from")) for h in history}
    assert shown["obsolet"] == ("2.0", "2020-01-01")


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_a_known_tag_routes(qm: KnowledgeBase, mode: str) -> None:
    routed = qm.query("[QM] Prüfanweisung", mode=mode, n_results=10, include_history=True)
    assert {h.id for h in routed.hits} == {"aktiv", "obsolet"}
    assert routed.query == "[QM] Prüfanweisung"
    sub = qm.query("FMEA: Prüfanweisung", mode=mode, n_results=10)
    assert [h.id for h in sub.hits] == ["ohne"]
    off = qm.query("[QM] Prüfanweisung", mode=mode, n_results=10, route_tags=False)
    assert {h.id for h in off.hits} == {"aktiv", "ohne"}


def test_routing_respects_clearance_and_the_setting(qm: KnowledgeBase) -> None:
    qm.add("kern", ["Personalakte Prüfanweisung"], ids=["hr"], metadatas=[{"tag": "HR"}])
    guest = Principal("guest", 1)
    qm.add("kern", ["Prüfanweisung HR öffentlich"], ids=["pub"], metadatas=[{"access_level": 1}])
    # HR exists only at level 4: for a level-1 reader it is not a tag, just a word
    hits = qm.query("[HR] Prüfanweisung", mode="lexical", principal=guest).hits
    assert [h.id for h in hits] == ["pub"]
    qm.settings = qm.settings.model_copy(update={"tag_routing": False})
    hits = qm.query("[QM] Prüfanweisung", mode="lexical", n_results=10).hits
    assert "ohne" in {h.id for h in hits}


def test_a_batch_routes_each_query_on_its_own(qm: KnowledgeBase) -> None:
    routed, plain = qm.query(
        ["[QM] Prüfanweisung", "Prüfanweisung"], mode="lexical", n_results=10, include_history=True
    )
    assert {h.id for h in routed.hits} == {"aktiv", "obsolet"}
    assert {h.id for h in plain.hits} == {"aktiv", "obsolet", "kuenftig", "ohne"}
    assert (routed.query, plain.query) == ("[QM] Prüfanweisung", "Prüfanweisung")
