"""A small client for any OpenAI-compatible ``/chat/completions`` endpoint (Ollama, vLLM,
llama.cpp server, OpenAI), on httpx.

Why not the ``openai`` package: osprag needs two calls (stream and non-stream), its own error
tree and retry policy, and no second HTTP stack. Failures the caller can do nothing about on
this request (connect errors, timeouts, 5xx, 429) are retried with exponential backoff and
then raised as ``LLMUnavailable``; a 4xx or a body that is not the OpenAI shape is ``LLMError``
at once, since retrying would give the same answer. A stream is only retried before its first
delta: once text has been handed out, a retry would repeat it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from osprag.config import LLMSettings
from osprag.errors import LLMError, LLMUnavailable

log = logging.getLogger(__name__)

Message = Mapping[str, str]
_BACKOFF = 0.5  # seconds before the first retry, doubled each time
_BACKOFF_MAX = 8.0
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class LLMClient:
    """One endpoint and model; thread-safe (httpx.Client is), reuse it across requests."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not settings.url:
            raise LLMError(
                "no LLM configured", hint="set OSP_LLM__URL, e.g. http://127.0.0.1:11434/v1"
            )
        self.settings = settings
        self.url = settings.url.rstrip("/")
        headers = {"Accept": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0)),
            headers=headers,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> LLMClient | None:
        """The configured client, or None when no URL is set (answers are then extractive)."""
        return cls(settings) if settings.url else None

    @property
    def model(self) -> str:
        return self.settings.model

    def info(self) -> dict[str, Any]:
        """What an answer reports about its model: the name only (not the key, not the host)."""
        return {"model": self.model}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- calls

    def _body(
        self,
        messages: Sequence[Message],
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": self.settings.temperature if temperature is None else temperature,
            "max_tokens": self.settings.max_tokens if max_tokens is None else max_tokens,
            "stream": stream,
        }

    def chat(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The whole reply of one non-streaming completion."""
        body = self._body(messages, False, temperature, max_tokens)
        for attempt in self._attempts():
            try:
                response = self._client.post(f"{self.url}/chat/completions", json=body)
            except httpx.TransportError as exc:  # connect errors and timeouts
                attempt.failed(self._transport_message(exc))
                continue
            if response.status_code in _RETRY_STATUS:
                attempt.failed(self._status_message(response.status_code, response.text))
                continue
            if response.status_code >= 400:
                raise LLMError(
                    "LLM refused the request: "
                    + self._status_message(response.status_code, response.text),
                    hint=f"check OSP_LLM__MODEL and OSP_LLM__API_KEY for {self.url}",
                )
            return _content(response)
        raise AssertionError("unreachable")  # pragma: no cover - _attempts raises when done

    def stream(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[str]:
        """Text deltas of one streaming completion (server-sent events), as they arrive."""
        body = self._body(messages, True, temperature, max_tokens)
        for attempt in self._attempts():
            started = False
            try:
                with self._client.stream(
                    "POST", f"{self.url}/chat/completions", json=body
                ) as response:
                    if response.status_code in _RETRY_STATUS:
                        attempt.failed(self._status_message(response.status_code, _read(response)))
                        continue
                    if response.status_code >= 400:
                        raise LLMError(
                            "LLM refused the request: "
                            + self._status_message(response.status_code, _read(response)),
                            hint=f"check OSP_LLM__MODEL and OSP_LLM__API_KEY for {self.url}",
                        )
                    for delta in _sse_deltas(response):
                        started = True
                        yield delta
                    return
            except httpx.TransportError as exc:
                if started:
                    raise LLMUnavailable(
                        f"the LLM stream broke off: {self._transport_message(exc)}"
                    ) from None
                attempt.failed(self._transport_message(exc))

    # ----------------------------------------------------------------- retries

    def _attempts(self) -> Iterator[_Attempt]:
        retries = self.settings.retries
        attempt = _Attempt()
        for i in range(retries + 1):
            if i:
                delay = min(_BACKOFF * 2 ** (i - 1), _BACKOFF_MAX)
                log.warning(
                    "LLM call failed (%s); retry %d/%d in %.1fs", attempt.last, i, retries, delay
                )
                time.sleep(delay)
            yield attempt
        raise LLMUnavailable(
            f"LLM unavailable after {retries + 1} attempt(s): {attempt.last}",
            hint=f"check that the server at {self.url} runs (OSP_LLM__URL) or raise "
            "OSP_LLM__TIMEOUT",
        )

    def _transport_message(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self.settings.timeout:g}s ({type(exc).__name__})"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _status_message(self, status: int, text: str) -> str:
        return f"HTTP {status}: {_excerpt(text)}"


class _Attempt:
    """Carries the last failure from one try to the retry loop's final error."""

    def __init__(self) -> None:
        self.last = ""

    def failed(self, message: str) -> None:
        self.last = message


def _read(response: httpx.Response) -> str:
    try:
        return response.read().decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""


def _content(response: httpx.Response) -> str:
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LLMError(
            f"LLM reply is not an OpenAI chat completion: {_excerpt(response.text)}"
        ) from None
    if not isinstance(content, str):
        raise LLMError("LLM reply has no text content")
    return content


def _sse_deltas(response: httpx.Response) -> Iterator[str]:
    """``data: {...}`` lines up to ``data: [DONE]``; comments and keep-alives are skipped."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            data = json.loads(payload)
        except ValueError:
            raise LLMError(
                f"LLM stream sent a line that is not JSON: {_excerpt(payload)}"
            ) from None
        if isinstance(data, dict) and "error" in data:
            raise LLMError(f"LLM stream reported an error: {_excerpt(json.dumps(data['error']))}")
        try:
            choice = data["choices"][0] if data.get("choices") else {}
            delta = choice.get("delta") or {}
            text = delta.get("content")
        except (AttributeError, KeyError, IndexError, TypeError):
            raise LLMError(
                f"LLM stream chunk has an unexpected shape: {_excerpt(payload)}"
            ) from None
        if isinstance(text, str) and text:
            yield text
