"""Schemathesis against the app's own OpenAPI spec, as the admin, over a populated store.

Every operation (uploads and deletes included: the store is this module's throwaway) gets
generated requests, valid and invalid; each response must not be a 5xx, and every error must
be the API's ``{"error", "message"}`` JSON. Bounded: a fixed seed, a few examples per
operation, no deadline, one app for the module.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from osprag import KnowledgeBase
from osprag.embedding import Embedder
from osprag.server import create_app

from .conftest import base_settings
from .server_helpers import auth, serve_settings, write_corpus, write_tokens

MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    srv = serve_settings(
        base_settings(tmp, storage="embedded"), tmp, rate_limit=100000.0, max_upload_mb=1.0
    )
    write_tokens(srv.server.tokens_file)  # type: ignore[arg-type]
    kb = KnowledgeBase.open(srv, embedder=embedder)
    try:
        kb.ingest([write_corpus(tmp / "corpus")], "kern")
        app = create_app(srv, kb=kb)
        with TestClient(app):  # runs the lifespan like a real server
            yield app
    finally:
        kb.close()


def _error_body_is_json(response: Any) -> None:
    """Every 4xx/5xx answers ``{"error": code, "message": text}`` — never FastAPI's
    ``{"detail": ...}`` nor an HTML page."""
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"{response.status_code} is not JSON: {response.content[:200]!r}"
        ) from None
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body


def _fuzz(op: Any, failures: list[str], statuses: Counter[int], data_dir: str) -> int:
    """Valid and invalid requests for one operation; returns how many were sent."""
    sent = [0]
    strategy = st.one_of(
        op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        sent[0] += 1
        try:
            response = case.call_and_validate(headers=auth("admin4"), checks=[not_a_server_error])
            statuses[response.status_code] += 1
            _error_body_is_json(response)
            # no answer tells where the server keeps its data (uploads echoed their path)
            assert data_dir not in response.text, response.text[:300]
        except Exception as exc:
            label = f"{op.method.upper()} {op.path}"
            if not any(f.startswith(label + ":") for f in failures):  # hypothesis shrinks
                failures.append(
                    f"{label}: {type(exc).__name__}: {str(exc)[:300]} "
                    f"<- {case.as_curl_command()[:300]}"
                )
            raise

    try:
        run()
    except Exception:  # noqa: BLE001 - the failure is recorded above, with the request
        pass
    return sent[0]


def test_schemathesis_no_server_errors_and_json_errors(fuzz_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    data_dir = str(fuzz_app.state.osp.settings.data_dir)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 10  # the whole API, not an empty spec
    sent = {f"{op.method.upper()} {op.path}": _fuzz(op, failures, statuses, data_dir) for op in ops}
    assert not failures, "\n".join(failures)
    # not vacuous: requests the API accepted and invalid ones it refused, on every operation
    # that takes input
    assert sent["POST /api/v1/query"] >= MAX_EXAMPLES // 2, sent
    assert sum(sent.values()) >= 20 * len(ops), sent
    assert statuses[200] >= 15 and sum(n for code, n in statuses.items() if code >= 400) >= 20


def test_fuzzed_store_still_answers(fuzz_app: FastAPI) -> None:
    """After the fuzzing the store still serves the corpus (nothing corrupted it)."""
    with TestClient(fuzz_app) as c:
        r = c.post("/api/v1/query", json={"query": "Crimphöhe"}, headers=auth("admin4"))
        assert r.status_code == 200 and r.json()["hits"]
        assert c.get("/health/ready").status_code == 200
