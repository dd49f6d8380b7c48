"""Answers over HTTP: osprag's own ``/api/v1/answer`` and the OpenAI-compatible chat endpoint.

Both retrieve under the caller's principal, so the clearance a token (or a proxied Open WebUI
user) has is the clearance its answer has. The LLM client is shared by the app; with none
configured, answers are extractive (cited sentences, no generated text).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from osprag.errors import LLMError
from osprag.generate.answerer import Answer, AnswerEvent
from osprag.generate.condense import condense, is_task_request
from osprag.generate.render import sources_markdown

from .auth import Caller
from .schemas import MAX_QUERY_CHARS
from .state import Reader, ServerState, State

router = APIRouter(tags=["answers"])

MODEL_ID = "osprag"
MAX_MESSAGES = 100


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)
    layers: list[str] | None = None
    where: dict[str, Any] | None = None
    n_sources: int | None = Field(None, ge=1, le=50)
    min_score: float | None = Field(None, ge=0, le=1)
    language: Literal["de", "en"] | None = None
    use_llm: bool = Field(True, description="false: extractive answer even with an LLM set")
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    include_history: bool = False
    stream: bool = Field(False, description="server-sent events: sources, delta…, done")

    def options(self) -> dict[str, Any]:
        query: dict[str, Any] = {"include_history": self.include_history}
        if self.mode is not None:
            query["mode"] = self.mode
        return {
            "layers": self.layers,
            "where": self.where,
            "n_sources": self.n_sources,
            "min_score": self.min_score,
            "language": self.language,
            "use_llm": self.use_llm,
            "query_options": query,
        }


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(..., max_length=32)
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The OpenAI chat request; sampling fields are accepted and left to osprag's settings."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(MODEL_ID, max_length=200)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False


def _audit(st: ServerState, who: Caller, route: str, result: Answer) -> None:
    st.audit.record(who.principal.name, route, [h.to_dict() for h in result.sources])


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/api/v1/answer", summary="An answer with checked [n] citations (SSE with stream)")
def answer(body: AnswerRequest, who: Reader, st: State) -> Any:
    options = dict(body.options(), principal=who.principal, llm=st.llm)
    if not body.stream:
        result = st.kb.answer(body.question, **options)
        _audit(st, who, "answer", result)
        return JSONResponse(result.to_dict())
    events = st.kb.answer_stream(body.question, **options)
    first = next(events)  # retrieval errors become a JSON error response, not a broken stream

    def stream() -> Iterator[str]:
        for event in _chain(first, events):
            if event.type == "done" and event.answer is not None:
                _audit(st, who, "answer", event.answer)
            yield _sse(event.type, event.to_dict())

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_BUFFER)


_NO_BUFFER = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _chain(first: AnswerEvent, rest: Iterator[AnswerEvent]) -> Iterator[AnswerEvent]:
    yield first
    yield from rest


@router.get("/v1/models", summary="OpenAI-compatible model list: one model, osprag")
def models(who: Reader) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "osprag"}],
    }


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _full_text(result: Answer) -> str:
    sources = sources_markdown(result)
    return result.text + (f"\n\n{sources}" if sources else "")


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat over osprag (Open WebUI)")
def chat(body: ChatRequest, who: Reader, st: State) -> Any:
    messages = [m.model_dump() for m in body.messages]
    cid, created = _completion_id(), int(time.time())
    if is_task_request(messages):
        # Open WebUI's title/tag/follow-up prompts: no document search; the LLM (if any)
        # answers them as they are, otherwise "{}" lets the front end fall back to defaults.
        content = _task(st, messages)
        if body.stream:
            return StreamingResponse(
                iter(
                    [
                        _chunk(cid, created, {"role": "assistant", "content": content}, "stop"),
                        "data: [DONE]\n\n",
                    ]
                ),
                media_type="text/event-stream",
                headers=_NO_BUFFER,
            )
        return JSONResponse(_completion(cid, created, content))
    question = condense(messages, st.llm)
    if not body.stream:
        result = st.kb.answer(question, principal=who.principal, llm=st.llm)
        _audit(st, who, "chat", result)
        body_json = _completion(cid, created, _full_text(result))
        body_json["osprag"] = {"question": question, **result.to_dict()}
        return JSONResponse(body_json)
    events = st.kb.answer_stream(question, principal=who.principal, llm=st.llm)
    first = next(events)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _chunk(cid, created, delta, finish)

    def stream() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        for event in _chain(first, events):
            if event.type == "delta" and event.text:
                yield chunk({"content": event.text})
            elif event.type == "done" and event.answer is not None:
                _audit(st, who, "chat", event.answer)
                sources = sources_markdown(event.answer)
                if sources:
                    yield chunk({"content": f"\n\n{sources}"})
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_BUFFER)


def _chunk(cid: str, created: int, delta: dict[str, Any], finish: str | None = None) -> str:
    data = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _completion(cid: str, created: int, content: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": MODEL_ID,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _task(st: ServerState, messages: list[dict[str, Any]]) -> str:
    if st.llm is None:
        return "{}"
    plain = [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
    ]
    try:
        return st.llm.chat(plain)
    except LLMError:
        return "{}"
