"""The glossary: validated on load, expands the lexical leg so an abbreviation finds the long
form (and back), weighted below what the user typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from osprag import KnowledgeBase
from osprag.errors import ConfigError
from osprag.search.glossary import DEFAULT_PATH, load_glossary, parse_glossary


def test_the_shipped_glossary_loads_and_covers_the_qm_abbreviations() -> None:
    glossary = load_glossary(None)
    assert glossary.source == str(DEFAULT_PATH)
    for abbreviation, long_form in [
        ("EMPB", "Erstmusterprüfbericht"),
        ("PPF", "PPAP"),
        ("FAI", "Erstmuster"),
        ("RPZ", "RPN"),
        ("i.O.", "in Ordnung"),
        ("n.i.O.", "nicht in Ordnung"),
        ("FuSi", "funktionale Sicherheit"),
    ]:
        assert long_form in glossary.expansions(f"Frage zu {abbreviation} bitte", 0.5)


def test_matching_is_per_whole_token() -> None:
    glossary = parse_glossary(
        {"group": [{"terms": ["i.O.", "in Ordnung"]}, {"terms": ["n.i.O.", "Ausschuss"]}]}, "t"
    )
    assert glossary.expansions("Teil n.i.O. melden", 0.5) == {"Ausschuss": 0.5}
    assert glossary.expansions("Teil i.o. melden", 0.5) == {"in Ordnung": 0.5}
    assert glossary.expansions("Ausschuss", 0.4) == {"n.i.O.": 0.4}
    three = parse_glossary({"group": [{"terms": ["A1", "B1", "C1"], "weight": 0.5}]}, "t")
    assert three.expansions("A1", 0.5) == {"B1": 0.125, "C1": 0.125}  # they share the weight
    assert glossary.expansions("Bio-Teil", 0.5) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[group]]\nterms = ['EMPB']\n", "at least two strings"),
        ("[[group]]\nterms = 'EMPB'\n", "at least two strings"),
        ("[[group]]\nterms = ['A', 'B']\nweight = 2\n", "weight must be"),
        ("[[group]]\nterms = ['A', 'B']\ncolour = 1\n", "may only have"),
        ("[[gruppe]]\nterms = ['A', 'B']\n", "unknown key"),
        ("[[group]\nterms = ", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "glossary.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_glossary(path)
    assert str(path) in str(info.value)


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_glossary(tmp_path / "nope.toml")


def test_an_abbreviation_finds_a_document_with_only_the_long_form(kb: KnowledgeBase) -> None:
    kb.add(
        "kern",
        [
            "Der Erstmusterprüfbericht wird vor Serienstart dem Kunden vorgelegt.",
            "Die funktionale Sicherheit der Steuergeräte folgt ISO 26262.",
            "Der EMPB enthält Maßbericht und Werkstoffnachweis.",
            "Die Kantine öffnet um 11 Uhr.",
        ],
        ids=["long", "fusi", "short", "other"],
    )
    hits = kb.query("EMPB", mode="lexical", n_results=5).hits
    assert [h.id for h in hits] == ["short", "long"]  # the typed form ranks first
    assert [h.id for h in kb.query("EMPB", mode="lexical", expand=False).hits] == ["short"]
    assert kb.query("FuSi", mode="lexical").hits[0].id == "fusi"
    assert kb.query("FuSi", mode="lexical", expand=False).hits == []
    assert kb.query("Erstmusterprüfbericht", mode="lexical", n_results=5).hits[0].id == "long"


def test_a_customer_glossary_replaces_the_default(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[[group]]\nterms = ["KTL", "kathodische Tauchlackierung"]\n', "utf-8")
    kb.settings = kb.settings.model_copy(update={"glossary_path": path})
    kb.add("kern", ["Die kathodische Tauchlackierung schützt"], ids=["ktl"])
    assert [h.id for h in kb.query("KTL", mode="lexical").hits] == ["ktl"]
