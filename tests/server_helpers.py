"""Shared pieces of the server tests: a tiny corpus with canaries at every access level, a
tokens file with one token per (role, clearance) the tests need, and an app over a real KB."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osprag import KnowledgeBase, Settings
from osprag.server.auth import TokenEntry, TokenFile, UserEntry, hash_token

CANARY = {
    1: "KANARIE-OEFFENTLICH-1111",
    2: "KANARIE-INTERN-2222",
    3: "KANARIE-VERTRAULICH-3333",
    4: "KANARIE-GEHEIM-4444",
}

DOCS = {
    1: "---\naccess_level: 1\ndoc_type: Richtlinie\n---\n# Crimpen Grundlagen\n\n"
    "Die Crimphöhe wird mit der Crimphöhenmessung geprüft. {canary}\n",
    2: "---\naccess_level: 2\ndoc_type: Arbeitsanweisung\n---\n# Crimpen intern\n\n"
    "Die Crimphöhe bei 0,35 mm² beträgt 0,75 mm. {canary}\n",
    3: "---\naccess_level: 3\ndoc_type: Prüfplan\n---\n# Crimpen vertraulich\n\n"
    "Lieferantenaudit Crimphöhe Abweichungen vertraulich. {canary}\n",
    4: "---\naccess_level: 4\ndoc_type: Bericht\n---\n# Crimpen geheim\n\n"
    "Reklamation Crimphöhe Kunde geheim Kosten. {canary}\n",
}

TOKENS = {
    "reader2": ("reader", 2, False),
    "reader4": ("reader", 4, False),
    "editor2": ("editor", 2, False),
    "admin4": ("admin", 4, False),
    "proxy4": ("reader", 4, True),
}
USERS = {"anna@example.com": 2, "chef@example.com": 4}


def token_value(name: str) -> str:
    return f"osp_test_{name}_" + "x" * 20


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_value(name)}"}


def write_tokens(path: Path) -> None:
    tf = TokenFile(path)
    for name, (role, clearance, proxy) in TOKENS.items():
        tf.tokens.append(
            TokenEntry(name, hash_token(token_value(name)), role, clearance, proxy)  # type: ignore[arg-type]
        )
    for email, clearance in USERS.items():
        tf.users.append(UserEntry(email, clearance))
    tf.save()


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for level, text in DOCS.items():
        (folder / f"crimpen-l{level}.md").write_text(
            text.format(canary=CANARY[level]), encoding="utf-8"
        )
    return folder


@dataclass
class Served:
    settings: Settings
    kb: KnowledgeBase
    corpus: Path


def serve_settings(settings: Settings, tmp_path: Path, **server: object) -> Settings:
    values = {"tokens_file": tmp_path / "tokens.toml", "audit_log": tmp_path / "audit.jsonl"}
    values.update(server)
    return settings.model_copy(
        update={
            "server": settings.server.model_copy(update=values),
            "query_cache": True,
        }
    )
