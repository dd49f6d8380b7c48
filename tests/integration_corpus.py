"""A tiny corpus for the retriever and client tests: three chunks a clearance-2 reader may see
and one secret one (access level 4) that matches the test question too."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from osprag import KnowledgeBase, Principal, Settings

QUESTION = "Wie hoch ist die Crimphöhe bei 0,35 mm²?"
READER = Principal("qm-app", clearance=2)
SECRET_ID = "k-secret"
SECRET_TEXT = (
    "Vertraulich: Reklamation Kunde Nordwerk, Crimphöhe bei 0,35 mm² außerhalb der Toleranz, "
    "Sonderfreigabe 0,35 mm² Crimphöhe 0,80 mm bis Kalenderwoche 12."
)
CRIMP_TEXT = "Die Crimphöhe bei 0,35 mm² beträgt 0,80 mm ± 0,03 mm; Prüfung mit Mikrometer."


def fill(kb: KnowledgeBase) -> None:
    kb.add(
        "kern",
        [CRIMP_TEXT, "Der 8D-Bericht ist binnen 24 Stunden nach Reklamation zu eröffnen.",
         SECRET_TEXT],
        ids=["k-crimp", "k-8d", SECRET_ID],
        metadatas=[
            {"access_level": 1, "source": "AA-Crimp.pdf", "page": 3,
             "section": "4.2 Crimphöhe", "version": "2.1", "doc_type": "work_instruction"},
            {"access_level": 2, "source": "8D-Leitfaden.docx", "section": "1 Ablauf"},
            {"access_level": 4, "source": "Reklamation-Nordwerk.pdf", "page": 1},
        ],
    )
    kb.add(
        "erweitert",
        ["VDA Band 6.3: Prozessaudit, Crimpverbindungen und Crimphöhe im Fragenkatalog."],
        ids=["e-vda"],
        metadatas=[{"access_level": 2, "source": "VDA-6.3.pdf", "page": 41}],
    )


@contextmanager
def serve_in_thread(kb: KnowledgeBase, settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A real ``osp serve`` app over ``kb`` under uvicorn in a thread; yields its base URL.
    Tokens are server_helpers' (``token_value("reader2")`` has clearance 2)."""
    from osprag.server import create_app

    from .server_helpers import serve_settings, write_tokens

    srv = serve_settings(settings, tmp_path)
    write_tokens(srv.server.tokens_file)  # type: ignore[arg-type]
    kb.settings = srv
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(
        create_app(srv, kb=kb), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
