"""The analyzer: domain tokens survive, umlauts fold, each language stems, compounds split."""

from __future__ import annotations

import pytest

from osprag.search.analysis import Analyzer, AnalyzerConfig, detect_language


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


def _meets(analyzer: Analyzer, document: str, query: str, language: str = "de") -> set[str]:
    return set(analyzer.document_terms(document, language)) & set(analyzer.query_terms(query))


DOMAIN_TOKENS = [
    ("0,35 mm²", "0.35"),
    ("±0,03 mm", "±0.03"),
    ("P6", "p6"),
    ("8D", "8d"),
    ("i.O.", "i.o"),
    ("n.i.O.", "n.i.o"),
    ("VDA 6.3", "6.3"),
    ("KS-4711-23", "ks-4711-23"),
    ("D3", "d3"),
    ("%GRR", "%grr"),
    ("cpk ≥ 1,33", "1.33"),
]


@pytest.mark.parametrize(("token", "term"), DOMAIN_TOKENS)
def test_domain_token_is_one_term_in_documents_and_queries(
    analyzer: Analyzer, token: str, term: str
) -> None:
    document = f"Laut Prüfbericht gilt {token} für das Los."
    assert term in analyzer.document_terms(document, "de")
    assert term in analyzer.query_terms(f"Was gilt für {token}?")


def test_decimal_numbers_stay_whole(analyzer: Analyzer) -> None:
    assert not _meets(analyzer, "Querschnitt 0,5 mm", "0,35")
    assert not _meets(analyzer, "Querschnitt 0,35 mm", "0,5")
    assert "0.35" in _meets(analyzer, "cross-section 0.35 mm", "0,35")


def test_units_and_signs(analyzer: Analyzer) -> None:
    assert {"mm2", "mm"} <= set(analyzer.document_terms("0,35 mm²"))
    assert "mm2" in analyzer.query_terms("mm2")  # NFKC: ² is 2
    assert "0.03" in analyzer.document_terms("±0,03 mm")  # the sign-less value too


def test_abbreviations_do_not_collide(analyzer: Analyzer) -> None:
    assert _meets(analyzer, "Teil ist n.i.O.", "n.i.O.") == {"n.i.o"}
    assert not _meets(analyzer, "Teil ist n.i.O.", "i.O.")
    assert not _meets(analyzer, "zum Beispiel z.B. hier", "z.B.")  # a stop abbreviation


def test_part_numbers_are_found_whole_and_by_parts(analyzer: Analyzer) -> None:
    terms = analyzer.document_terms("Zeichnung KS-4711-23 Rev. B")
    assert {"ks-4711-23", "4711", "23"} <= set(terms)
    assert _meets(analyzer, "Zeichnung KS-4711-23", "4711") == {"4711"}


def test_percent_code(analyzer: Analyzer) -> None:
    assert {"%grr", "grr"} <= set(analyzer.document_terms("%GRR unter 10 %"))


@pytest.mark.parametrize("variant", ["Häuser", "Haeuser", "HÄUSER", "Haus"])
def test_umlauts_fold_with_the_german_stemmer(analyzer: Analyzer, variant: str) -> None:
    assert analyzer.document_terms(variant, "de") == ["haus"]


def test_sharp_s_folds(analyzer: Analyzer) -> None:
    assert analyzer.document_terms("Straße", "de") == analyzer.document_terms("Strasse", "de")
    assert analyzer.fold("größe") == "grosse"


def test_expand_folding_is_available() -> None:
    expand = Analyzer(AnalyzerConfig(fold="expand", stemming="none", compounds="off"))
    assert expand.document_terms("Prüfung") == ["pruefung"]


def test_documents_stem_in_their_language(analyzer: Analyzer) -> None:
    assert analyzer.document_terms("Messungen", "de") == ["messung"]
    assert analyzer.document_terms("measurements", "en") == ["measur"]


def test_queries_carry_both_stemmings(analyzer: Analyzer) -> None:
    query = analyzer.query("Messungen measurements")
    assert "messung" in query.by_language["de"]  # scored against German chunks
    assert {"messungen", "measur"} <= set(query.by_language["en"])  # against English ones
    assert _meets(analyzer, "All measurements were recorded.", "measurement", "en")
    assert _meets(analyzer, "Alle Messungen wurden erfasst.", "Messung", "de")


def test_stopwords_leave_negations(analyzer: Analyzer) -> None:
    terms = analyzer.query_terms("Die Prüfung ist nicht bestanden und the test is not passed")
    assert {"die", "und", "the", "is"}.isdisjoint(terms)
    assert {"nicht", "not"} <= set(terms)


def test_compound_document_is_found_by_its_parts(analyzer: Analyzer) -> None:
    document = "Die Crimphöhenmessung erfolgt stündlich."
    assert _meets(analyzer, document, "Crimphöhe")
    assert _meets(analyzer, document, "Messung")
    assert _meets(analyzer, document, "Messungen")


def test_compound_query_finds_its_parts(analyzer: Analyzer) -> None:
    assert _meets(analyzer, "Die Crimphöhe wird gemessen.", "Crimphöhenmessung")


def test_compound_pieces_weigh_less_in_queries(analyzer: Analyzer) -> None:
    weights = analyzer.query("Crimphöhenmessung").by_language["de"]
    whole = analyzer.document_terms("Crimphöhenmessung", "de")[0]
    assert weights[whole] == 1.0
    assert weights["messung"] == pytest.approx(AnalyzerConfig().compound_query_weight)


def test_english_words_are_not_decompounded(analyzer: Analyzer) -> None:
    assert analyzer.document_terms("characterization", "en") == ["character"]


def test_compounds_off_and_ngrams() -> None:
    off = Analyzer(AnalyzerConfig(compounds="off"))
    assert off.document_terms("Crimphöhenmessung", "de") == ["crimphohenmess"]
    grams = Analyzer(AnalyzerConfig(compounds="ngram")).document_terms("Crimphöhenmessung", "de")
    assert "#mess" in grams


def test_hyphenated_words_meet_their_closed_form(analyzer: Analyzer) -> None:
    assert _meets(analyzer, "Toolqualifikation nach ISO 26262", "Tool-Qualifikation")
    assert "email" in analyzer.document_terms("E-Mail", "de")


def test_letters_glued_to_numbers_are_split(analyzer: Analyzer) -> None:
    assert {"0.35mm2", "0.35", "mm"} <= set(analyzer.document_terms("0,35mm²"))
    assert {"iso26262", "iso", "26262"} <= set(analyzer.document_terms("ISO26262"))


def test_identity_names_every_choice() -> None:
    assert Analyzer().identity() != Analyzer(AnalyzerConfig(fold="expand")).identity()
    assert Analyzer().identity() == Analyzer(AnalyzerConfig()).identity()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Die Prüfung der Crimphöhe erfolgt nach dem Prüfplan und wird dokumentiert.", "de"),
        ("The crimp height is checked against the control plan and recorded.", "en"),
        ("P6 8D D3", "de"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_document_language_prefers_metadata(analyzer: Analyzer) -> None:
    english = "The crimp height is checked against the control plan."
    assert analyzer.document_language(english, None) == "en"
    assert analyzer.document_language(english, "de") == "de"
    assert analyzer.document_language(english, "fr") == "en"


def test_empty_and_symbol_only_text(analyzer: Analyzer) -> None:
    assert analyzer.document_terms("") == []
    assert analyzer.query_terms("?? -- ≥ …") == []
