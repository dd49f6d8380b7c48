"""Prompt building, question language, extractive sentence picking and the condense heuristic."""

from __future__ import annotations

import pytest

from osprag.errors import InvalidInput
from osprag.generate.condense import condense, heuristic_condense, is_follow_up, is_task_request
from osprag.generate.extractive import extractive_answer
from osprag.generate.prompt import SYSTEM, build_messages, question_language, source_header
from osprag.results import Hit


def _hit(i: int, text: str, **meta: object) -> Hit:
    return Hit(
        id=f"c{i}",
        layer="kern",
        text=text,
        metadata=dict(meta),
        distance=0.2,
        score=0.8,
        rank=i,
        relevance=0.95,
    )


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("Wie oft muss die Crimphöhe gemessen werden?", "de"),
        ("How often must the crimp height be measured?", "en"),
        ("Crimphöhe 0,35 mm²?", "de"),
        ("What is the PPAP level for a process change?", "en"),
        ("Crimphöhe for the AA-12?", "de"),
    ],
)
def test_question_language(question: str, language: str) -> None:
    assert question_language(question) == language


def test_messages_number_sources_with_their_place() -> None:
    hits = [
        _hit(
            1,
            "Die Crimphöhe ist zu messen.",
            source="AA/AA-12.pdf",
            title="AA-12 Crimpen",
            page=3,
            section="Crimpen > Crimphöhe",
            version="2.1",
        ),
        _hit(
            2,
            "Reaktionsplan: Sperren.",
            source="LP.xlsx",
            title="LP",
            sheet="LP",
            row_start=5,
            row_end=7,
        ),
    ]
    system, user = build_messages("Wie oft wird die Crimphöhe gemessen?", hits)
    assert system == {"role": "system", "content": SYSTEM["de"]}
    content = user["content"]
    assert "[1] AA-12 Crimpen — AA/AA-12.pdf, S. 3, § Crimpen > Crimphöhe, Rev. 2.1\n" in content
    assert "[2] LP — LP.xlsx, Blatt LP, Zeile 5–7\nReaktionsplan: Sperren." in content
    assert content.index("[1]") < content.index("[2]") < content.index("Frage: Wie oft")
    english = build_messages("How often is it measured?", hits)
    assert english[0]["content"] == SYSTEM["en"] and "S. 3" not in english[1]["content"]
    assert source_header(3, _hit(3, "x"), "en") == "[3] c3"


def test_extractive_answer_is_verbatim_and_cited() -> None:
    hits = [
        _hit(
            1,
            "Crimpen\nDie Abzugskraft wird pro Schicht geprüft. Das Werkzeug ist blau.",
            section="Crimpen",
        ),
        _hit(2, "Die Crimphöhe ist bei jedem Rüsten zu messen. Sonst nichts Wichtiges hier."),
    ]
    text, cited = extractive_answer("Wann wird die Crimphöhe gemessen?", hits, "de")
    lines = text.splitlines()
    assert lines[1] == "- Die Crimphöhe ist bei jedem Rüsten zu messen. [2]"
    assert cited[0] == 2
    for line in lines[1:]:
        sentence, n = line[2:].rsplit(" [", 1)
        assert sentence in (hits[int(n.rstrip("]")) - 1].text or "")
    assert "Crimpen" not in lines  # the heading line is not a sentence
    assert extractive_answer("Apfelkuchen backen", hits, "de") == ("", [])


@pytest.mark.parametrize(
    ("previous", "last", "expected"),
    [
        (
            "Welche Crimphöhe gilt für 0,35 mm²?",
            "und für 0,5 mm²?",
            "Welche Crimphöhe gilt für 0,5 mm²?",
        ),
        (
            "What is the pull-off force for 0.35 mm2?",
            "and 0.5 mm2?",
            "What is the pull-off force for 0.5 mm2?",
        ),
        (
            "Wie oft wird die Abzugskraft geprüft?",
            "und die Crimphöhe?",
            "Wie oft wird die Crimphöhe geprüft?",
        ),
        (
            "Wie oft wird die Abzugskraft beim Crimpen geprüft?",
            "Und die Crimphöhe?",
            "oft Abzugskraft Crimpen geprüft die Crimphöhe?",
        ),
        (
            "Wie oft wird die Abzugskraft geprüft?",
            "und beim Spritzguss?",
            "oft Abzugskraft geprüft beim Spritzguss?",
        ),
    ],
)
def test_heuristic_condense(previous: str, last: str, expected: str) -> None:
    assert heuristic_condense(previous, last) == expected


def test_open_webui_task_requests_are_recognised() -> None:
    task = "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat."
    assert is_task_request([{"role": "user", "content": task}])
    assert not is_task_request([{"role": "user", "content": "Welche Crimphöhe gilt?"}])


def test_condense_needs_a_user_turn() -> None:
    with pytest.raises(InvalidInput, match="no user message"):
        condense([{"role": "system", "content": "Du bist ein Assistent."}])


def test_condense_keeps_standalone_questions() -> None:
    first = [{"role": "user", "content": "Welche Crimphöhe gilt für 0,35 mm²?"}]
    assert condense(first) == "Welche Crimphöhe gilt für 0,35 mm²?"
    standalone = "Wie oft muss laut Lenkungsplan die Maßprüfung der Gehäuse erfolgen?"
    convo = [
        *first,
        {"role": "assistant", "content": "0,75 mm [1]"},
        {"role": "user", "content": [{"type": "text", "text": standalone}]},
    ]
    assert not is_follow_up(standalone)
    assert condense(convo) == standalone
    convo[-1] = {"role": "user", "content": "und für 0,5 mm²?"}
    assert condense(convo) == "Welche Crimphöhe gilt für 0,5 mm²?"
    convo += [
        {"role": "assistant", "content": "0,85 mm [1]"},
        {"role": "user", "content": "und die Abzugskraft?"},
    ]
    assert condense(convo) == "Welche Abzugskraft gilt für 0,5 mm²?"  # builds on the last one
