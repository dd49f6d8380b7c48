"""The OpenAI-compatible chat endpoint and /api/v1/answer over a real server: the official
``openai`` client, a real OpenAI-compatible LLM process (tests/fake_llm_server.py, good and
adversarial), clearance through chat (tokens and proxied users), follow-ups, Open WebUI tasks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from osprag import KnowledgeBase, Settings
from osprag.config import LLMSettings

from .integration_corpus import QUESTION, SECRET_TEXT, fill, serve_in_thread
from .server_helpers import token_value

SECRET_MARK = "Nordwerk"


@pytest.fixture
def storage() -> str:
    """Embedded only: the chat layer sits on the query path that both modes already test."""
    return "embedded"


@contextmanager
def _served(settings: Settings, kb: KnowledgeBase, tmp_path: Path, **llm: object) -> Iterator[str]:
    srv = settings.model_copy(
        update={"answer_min_score": 0.0, "llm": LLMSettings(**llm)}  # type: ignore[arg-type]
    )
    fill(kb)
    with serve_in_thread(kb, srv, tmp_path) as url:
        yield url


@pytest.fixture
def good(kb: KnowledgeBase, settings: Settings, tmp_path: Path, llm_url: str) -> Iterator[str]:
    with _served(settings, kb, tmp_path, url=llm_url, model="good", timeout=2, retries=0) as url:
        yield url


def _client(base: str, token: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{base}/v1", api_key=token_value(token), default_headers=headers, max_retries=0
    )


def _sources_cited(content: str) -> set[int]:
    return {int(n) for n in re.findall(r"\[(\d+)\]", content)}


def test_openai_client_chat_with_citations_and_clearance(good: str) -> None:
    high = _client(good, "reader4")
    assert [m.id for m in high.models.list()] == ["osprag"]
    full = high.chat.completions.create(
        model="osprag", messages=[{"role": "user", "content": QUESTION}]
    )
    content = full.choices[0].message.content or ""
    extra = full.model_extra["osprag"]  # type: ignore[index]
    assert extra["citations"], content
    assert "Quellen" in content
    by_n = {s["n"]: s for s in extra["sources"]}
    for c in extra["citations"]:  # each [n] points at a retrieved chunk containing the quote
        assert c["n"] in by_n and c["id"] == by_n[c["n"]]["id"]
        if c.get("quote"):
            assert " ".join(c["quote"].split()) in " ".join(by_n[c["n"]]["text"].split())
    assert SECRET_MARK in json.dumps(extra, ensure_ascii=False)  # the paired positive

    low = _client(good, "reader2").chat.completions.create(
        model="osprag", messages=[{"role": "user", "content": QUESTION}]
    )
    assert SECRET_MARK not in low.model_dump_json()
    # streaming, through a proxy token naming a clearance-2 user: still no secret
    stream = _client(good, "proxy4", **{"X-OpenWebUI-User-Email": "anna@example.com"})
    parts = [
        chunk.choices[0].delta.content or ""
        for chunk in stream.chat.completions.create(
            model="osprag", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        if chunk.choices
    ]
    text = "".join(parts)
    assert len(parts) > 3 and "Quellen" in text and SECRET_MARK not in text
    assert _sources_cited(text)
    chef = _client(good, "proxy4", **{"X-OpenWebUI-User-Email": "chef@example.com"})
    chef_text = chef.chat.completions.create(
        model="osprag", messages=[{"role": "user", "content": QUESTION}]
    ).model_dump_json()
    assert SECRET_MARK in chef_text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{good}/v1", api_key="wrong", max_retries=0).models.list()


def test_answer_route_json_and_sse(good: str) -> None:
    headers = {"Authorization": f"Bearer {token_value('reader2')}"}
    r = httpx.post(f"{good}/api/v1/answer", json={"question": QUESTION}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["citations"] and not body["refused"] and SECRET_MARK not in r.text
    events = []
    with httpx.stream(
        "POST",
        f"{good}/api/v1/answer",
        json={"question": QUESTION, "stream": True},
        headers=headers,
        timeout=30,
    ) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    assert events[0] == "sources" and events[-1] == "done" and "delta" in events
    bad = httpx.post(f"{good}/api/v1/answer", json={"question": ""}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_input"
    bad = httpx.post(
        f"{good}/api/v1/answer", json={"question": "x", "layers": ["nope"]}, headers=headers
    )
    assert bad.status_code == 404 and bad.json()["error"] == "layer_not_found"


def test_adversarial_llm_citations_are_checked(
    kb: KnowledgeBase, settings: Settings, tmp_path: Path, llm_url: str
) -> None:
    with _served(settings, kb, tmp_path, url=llm_url, model="adversarial", retries=0) as base:
        client = _client(base, "reader4")
        for stream in (False, True):
            if stream:
                text = "".join(
                    c.choices[0].delta.content or ""
                    for c in client.chat.completions.create(
                        model="osprag",
                        messages=[{"role": "user", "content": QUESTION}],
                        stream=True,
                    )
                    if c.choices
                )
            else:
                resp = client.chat.completions.create(
                    model="osprag", messages=[{"role": "user", "content": QUESTION}]
                )
                text = resp.choices[0].message.content or ""
                extra = resp.model_extra["osprag"]  # type: ignore[index]
                assert 9 in extra["removed_citations"] and 7 in extra["removed_citations"]
                n_sources = len(extra["sources"])
                assert all(c["n"] <= n_sources for c in extra["citations"])
            answer_part = text.split("**Quellen**")[0]
            assert "[9]" not in answer_part and "7]" not in answer_part


def test_llm_down_follow_ups_and_webui_tasks(
    kb: KnowledgeBase, settings: Settings, tmp_path: Path
) -> None:
    # an LLM at a closed port: the chat still answers with the sources and says so
    with _served(settings, kb, tmp_path, url="http://127.0.0.1:9/v1", timeout=1, retries=0) as base:
        client = _client(base, "reader2")
        resp = client.chat.completions.create(
            model="osprag", messages=[{"role": "user", "content": QUESTION}]
        )
        extra = resp.model_extra["osprag"]  # type: ignore[index]
        assert extra["llm"]["error"] and extra["sources"]
        assert "Quellen" in (resp.choices[0].message.content or "")
        # a follow-up needs the earlier turn (heuristic, the LLM being down)
        follow = client.chat.completions.create(
            model="osprag",
            messages=[
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": "0,80 mm [1]"},
                {"role": "user", "content": "und für 0,5 mm²?"},
            ],
        )
        question = follow.model_extra["osprag"]["question"]  # type: ignore[index]
        assert "Crimphöhe" in question and "0,5" in question
        # Open WebUI's background task prompt is not searched; "{}" without an LLM
        task = client.chat.completions.create(
            model="osprag",
            messages=[{"role": "user", "content": "### Task:\nGenerate a concise title"}],
        )
        assert task.choices[0].message.content == "{}"
        assert SECRET_TEXT[:30] not in task.model_dump_json()
