"""normalize_text: the one place that decides which text differences do not matter."""

from __future__ import annotations

import pytest

from osprag.ingest.normalize import normalize_inline, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Crimp-\nhöhe messen", "Crimphöhe messen"),
        ("die Crimp-\n  höhe", "die Crimphöhe"),  # indented continuation (text exports)
        ("Crimp-Kontakt prüfen", "Crimp-Kontakt prüfen"),
        ("nach VDA 6.3-\nAudit", "nach VDA 6.3-\nAudit"),  # digit before the hyphen
        ("Kunden-\nReklamation", "Kunden-\nReklamation"),  # next line starts upper case
        ("Ein-\nund Ausgang", "Ein-\nund Ausgang"),  # elided word part before a conjunction
        ("Verfahrens-\noder Arbeitsanweisung", "Verfahrens-\noder Arbeitsanweisung"),
        ("Liste:\n- Punkt", "Liste:\n- Punkt"),
    ],
)
def test_dehyphenation_only_joins_words_broken_at_a_line_end(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_dehyphenation_can_be_switched_off() -> None:
    assert normalize_text("Crimp-\nhöhe", dehyphenate=False) == "Crimp-\nhöhe"


def test_unicode_is_nfc_and_invisible_characters_are_gone() -> None:
    decomposed = "Pru\u0308fmittel"  # macOS file names and some PDFs decompose umlauts
    assert normalize_text(decomposed) == "Prüfmittel"
    assert normalize_text("Crimp\u00adhöhe\u200b ist\ufeff gut") == "Crimphöhe ist gut"
    assert normalize_text("x\u0304-R-Karte") == "x\u0304-R-Karte"  # no precomposed x̄: kept


def test_line_endings_whitespace_and_blank_lines() -> None:
    raw = (
        "  Zeile 1\t mit  Tab   \r\nZeile 2\r\r\n\r\n\r\n\r\n"
        "Absatz\x0cSeite 2\x0bZeile\u2028Ende  \n\n"
    )
    assert normalize_text(raw) == "  Zeile 1 mit Tab\nZeile 2\n\nAbsatz\nSeite 2\nZeile\nEnde"


def test_indentation_is_kept_and_special_spaces_become_plain_spaces() -> None:
    assert normalize_text("    code  line") == "    code line"
    assert normalize_text("0,35\u00a0mm²  z.\u202fB.") == "0,35 mm² z. B."


def test_control_characters_are_removed() -> None:
    assert normalize_text("a\x00b\x07c\x1bd\x85e") == "abcd\ne"


def test_idempotent() -> None:
    raw = "Über-\nschrift  \r\n\r\n\r\n  - Punkt\u00ad eins\t\n"
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_inline_collapses_everything_to_one_line() -> None:
    assert normalize_inline("  1 Zweck\n des\u00a0Handbuchs ") == "1 Zweck des Handbuchs"
    assert normalize_inline("Pru\u0308fung\u200b") == "Prüfung"
    assert normalize_inline("") == ""
