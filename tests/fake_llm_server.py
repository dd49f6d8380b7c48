"""A small OpenAI-compatible chat server for the tests, run as its own process.

Behaviour is chosen per request by the model name, so one process serves every test:

* ``good``        cites source 1 with a verbatim quote from it, and source 2
* ``adversarial`` cites [9] and [1, 7], and attributes an invented quote to [2]
* ``hang``        never answers (until the client's timeout)
* ``hang-mid``    streams a first sentence, then stalls
* ``error500``    HTTP 500 every time
* ``flaky``       HTTP 503 on the first request, then behaves like ``good``
* ``keyed``       401 unless ``Authorization: Bearer sk-test``; then ``good``
* ``title``       quotes source 1's title (from its header line) and cites [1]
* ``condense``    replies with a fixed standalone question
* ``empty``       an empty reply
* ``garbage``     HTTP 200 that is not a chat completion (HTML; a stream line that is not JSON)

Streams are split into 5-character deltas so that ``[9]`` and quotes arrive in pieces.
``GET /stats`` returns the request count per model (the tests check the retries).
Run: ``python tests/fake_llm_server.py`` → prints the port on stdout's first line.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONDENSED = "Welche Crimphöhe gilt für 0,5 mm²?"
_HEADER = re.compile(r"^\[(\d+)\] .*$", re.MULTILINE)
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _sources(prompt: str) -> dict[int, str]:
    """Source number → its text, from the ``[n] header`` blocks of the user message."""
    out: dict[int, str] = {}
    marks = list(_HEADER.finditer(prompt))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(prompt)
        body = prompt[mark.end() : end].strip()
        body = body.split("\n\nFrage:")[0].split("\n\nQuestion:")[0]
        out[int(mark.group(1))] = body
    return out


def _quote(text: str, words: int = 6) -> str:
    lines = [ln for ln in text.splitlines() if len(ln.split()) >= words]
    return " ".join((lines[-1] if lines else text).split()[:words])


def reply_for(model: str, messages: list[dict[str, Any]]) -> str:
    prompt = str(messages[-1].get("content", ""))
    sources = _sources(prompt)
    if model == "condense":
        return CONDENSED
    if model == "title":
        title = _HEADER.search(prompt)
        name = title.group(0).split("] ", 1)[1].split(" — ")[0] if title else "?"
        return f"Die Arbeitsanweisung „{name}“ [1] regelt das Messen [1]."
    if model == "empty":
        return ""
    if model == "adversarial":
        return (
            "Die Crimphöhe wird regelmäßig geprüft [1]. Laut Handbuch gilt „Crimphöhen "
            "werden niemals gemessen“ [2]. Weitere Details siehe [9] und [1, 7]."
        )
    first = _quote(sources.get(1, "keine Quelle"))
    return f"Laut Arbeitsanweisung gilt: „{first}“ [1]. Ergänzend siehe [2]."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/stats":
            with _lock:
                self._json(200, dict(_counts))
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found"}})
            return
        model = str(body.get("model", "good"))
        with _lock:
            _counts[model] = _counts.get(model, 0) + 1
            count = _counts[model]
        if model == "hang":
            time.sleep(60)
            return
        if model == "error500":
            self._json(500, {"error": {"message": "internal error"}})
            return
        if model == "flaky" and count == 1:
            self._json(503, {"error": {"message": "loading model"}})
            return
        if model == "keyed" and self.headers.get("Authorization") != "Bearer sk-test":
            self._json(401, {"error": {"message": "invalid api key"}})
            return
        if model == "garbage":
            self._garbage(bool(body.get("stream")))
            return
        text = reply_for(model, body.get("messages", []))
        if body.get("stream"):
            self._stream(model, text)
        else:
            self._json(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                },
            )

    def _garbage(self, stream: bool) -> None:
        data = b"data: <html>oops</html>\n\n" if stream else b"<html>oops</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, model: str, text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
        for i, piece in enumerate(pieces):
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if model == "hang-mid" and i == 8:
                time.sleep(60)
                return
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
