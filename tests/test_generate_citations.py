"""Citation parsing and checking (pure logic): unknown [n] removed, invented quotes flagged."""

from __future__ import annotations

import pytest

from osprag.generate.citations import FLAG, check_citations, parse_groups, quote_in, stable_end

SOURCES = [
    "Crimpen > Crimphöhe\nDie Crimphöhe ist bei jedem Rüsten und alle 500 Teile zu messen.",
    "Die Abzugskraft wird einmal pro Schicht geprüft. Mindestens 60 N für 0,5 mm².",
]


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("A [1].", [(1,)]),
        ("A [1, 3] und [2;4].", [(1, 3), (2, 4)]),
        ("A [1][2].", [(1,), (2,)]),
        ("A [2-4] B [1 und 2]", [(2, 3, 4), (1, 2)]),
        ("A [Quelle 2] B [Sources 1, 3] C [Quellen 1 und 4]", [(2,), (1, 3), (1, 4)]),
        ("Toleranz [0,35] und [0]", []),
        ("ein Link [1](http://example.com) und [x]", []),
    ],
)
def test_parse_groups(text: str, groups: list[tuple[int, ...]]) -> None:
    assert [g.numbers for g in parse_groups(text)] == groups


def test_unknown_numbers_are_removed_with_their_space() -> None:
    checked = check_citations("Messen [1]. Prüfen [Quelle 9]. Beides [1, 7][2].", SOURCES)
    assert checked.text == "Messen [1]. Prüfen. Beides [1][2]."
    assert checked.cited == [1, 2]
    assert checked.invalid == [9, 7]
    assert "[9]" in checked.warnings[0] and "[7]" in checked.warnings[0]


def test_verified_quote_tolerates_case_whitespace_and_ellipsis() -> None:
    text = "Es heißt: „die  crimphöhe ist bei jedem Rüsten … zu messen“ [1]."
    checked = check_citations(text, SOURCES)
    assert checked.text == text
    assert checked.cited == [1]
    assert checked.quotes[0].found_in == [1]
    assert checked.quote_for(1) == "die  crimphöhe ist bei jedem Rüsten … zu messen"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Laut Handbuch gilt „Crimphöhen werden niemals gemessen“ [2]. Messen [1].", "de"),
        ('The manual says "crimp heights are never measured" [2]. Measure [1].', "en"),
        ("Laut Handbuch gilt “Crimphöhen werden niemals gemessen” [2, 9]. Messen [1].", "de"),
    ],
)
def test_invented_quote_is_flagged_never_cited(text: str, language: str) -> None:
    checked = check_citations(text, SOURCES, language)  # type: ignore[arg-type]
    assert checked.cited == [1]
    assert FLAG[language] in checked.text
    assert "[2]" not in checked.text and "[9]" not in checked.text
    assert not checked.quotes[0].verified
    assert checked.quote_for(2) is None


def test_quote_in_needs_order_of_pieces() -> None:
    assert quote_in("alle 500 Teile … zu messen", SOURCES[0])
    assert not quote_in("zu messen … alle 500 Teile", SOURCES[0])
    assert not quote_in("0,35 mm²", SOURCES[1])


def test_quote_in_another_sentence_is_not_attributed() -> None:
    checked = check_citations("„Erfunden und falsch zitiert hier“. Messen [1].", SOURCES)
    assert checked.text.endswith("Messen [1].")
    assert checked.quotes == []
    assert any("unattributed" in w for w in checked.warnings)


@pytest.mark.parametrize(
    "text",
    [
        "Laut Handbuch gilt „Crimphöhen werden niemals gemessen“ [2]. Details [9] und [1, 7].",
        "Es heißt „Die Crimphöhe ist bei jedem Rüsten“ [1] und [3] sowie „x y z“ [1][2]. Ende [12]",
        'Quote "alle 500 Teile zu messen" [1], and "made up words here" [2]; see [4-5] [1]',
    ],
)
def test_streamed_prefixes_never_show_what_the_check_removes(text: str) -> None:
    """Every prefix the stream may send is a prefix of the final checked text."""
    final = check_citations(text, SOURCES).text
    emitted = ""
    for i in range(1, len(text) + 1):
        raw = text[:i]
        checked = check_citations(raw[: stable_end(raw)], SOURCES).text
        assert final.startswith(checked), (raw, checked)
        if len(checked) > len(emitted):
            emitted = checked
    assert "[9]" not in emitted and "[12]" not in emitted and "[4" not in emitted
