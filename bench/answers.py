"""Answers on the sample corpus without an LLM: does the extractive answer cite the right file,
is every cited sentence verbatim, how often is an answer refused, and what does it cost?

For the 30 answerable questions of ``bench/data/osp_corpus_questions.jsonl`` the extractive
answer is built with refusal off (``min_score=0``): "first citation answers" = the file of
its first (best-scoring) sentence is one that answers, against retrieval's own hit@1 as the
baseline (the sentence scorer may prefer another retrieved chunk). "cited files answer" = share
of all cited files that answer. "verbatim" = cited sentences found word for word in their
chunk (must be 100 %). Refusal over all 60 questions at several thresholds (the default
``answer_min_score`` among them).
Timing: median per question of ``answer(use_llm=False)`` and of its retrieval part (no result
cache), and the streaming citation check over a 2,500-character answer in 5-character
deltas against one check of the whole text. Timings are CPU-sensitive: re-run on a quiet machine.

    .venv/bin/python bench/answers.py [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, machine_line, write_section  # noqa: E402
from qm_questions import CORPUS, STYLES, load, source_of  # noqa: E402

from osprag import KnowledgeBase, Settings  # noqa: E402
from osprag.generate import answer  # noqa: E402
from osprag.generate.citations import check_citations, stable_end  # noqa: E402

N_SOURCES = 6
NO_CACHE = {"use_cache": False}


def _ms(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def synthetic_answer() -> tuple[str, list[str]]:
    sources = [
        f"Quelle {i}: Die Crimphöhe ist bei jedem Rüsten und alle {i * 100} Teile zu messen. "
        "Die Abzugskraft wird einmal pro Schicht geprüft." * 3
        for i in range(1, 7)
    ]
    sentences = []
    for i in range(40):
        n = i % 6 + 1
        if i % 9 == 0:
            sentences.append(f"Es gilt „alle {n * 100} Teile zu messen“ [{n}].")
        else:
            sentences.append(f"Aussage {i} über die Prüfung laut Arbeitsanweisung [{n}, {n + 7}].")
    return " ".join(sentences)[:2500], sources


def stream_check_ms(text: str, sources: list[str]) -> tuple[float, float]:
    def streamed() -> None:
        for end in range(5, len(text) + 5, 5):
            raw = text[:end]
            check_citations(raw[: stable_end(raw)], sources)
        check_citations(text, sources)

    once = statistics.median(_ms(lambda: check_citations(text, sources)) for _ in range(5))
    whole = statistics.median(_ms(streamed) for _ in range(3))
    return once, whole


def run(questions: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data", cache_dir=ROOT / "bench" / ".cache" / "embed"
        )
        with KnowledgeBase.open(settings) as kb:
            kb.ingest([CORPUS / "kern"], "kern")
            kb.ingest([CORPUS / "erweitert"], "erweitert")
            out["threshold"] = kb.settings.answer_min_score
            kb.query("warm up", n_results=N_SOURCES)
            answer_ms = []
            for q in questions:
                result = None

                def build(q: dict[str, Any] = q) -> None:
                    nonlocal result
                    result = answer(
                        kb,
                        q["text"],
                        use_llm=False,
                        min_score=0.0,
                        n_sources=N_SOURCES,
                        query_options=NO_CACHE,
                    )

                answer_ms.append(_ms(build))
                assert result is not None
                files = [source_of(c.to_dict()) for c in result.citations]
                verbatim = 0
                lines = result.text.splitlines()[1:]
                for line in lines:
                    sentence, n = line[2:].rsplit(" [", 1)
                    chunk = result.sources[int(n.rstrip("]")) - 1].text or ""
                    verbatim += sentence in " ".join(chunk.split())
                out["rows"].append(
                    {
                        "id": q["id"],
                        "kind": q["kind"],
                        "style": q.get("style"),
                        "hit1": bool(result.sources)
                        and source_of(result.sources[0].metadata) in q.get("sources", []),
                        "first": bool(files) and files[0] in q.get("sources", []),
                        "cited_ok": sum(f in q.get("sources", []) for f in files),
                        "cited": len(files),
                        "verbatim": verbatim,
                        "sentences": len(lines),
                        "top": max((h.relevance or 0.0 for h in result.sources), default=0.0),
                        "retrieve": result.timings_ms["retrieve"],
                        "overhead": result.timings_ms["total"] - result.timings_ms["retrieve"],
                    }
                )
            out["answer_ms"] = statistics.median(answer_ms)
            out["retrieve_ms"] = statistics.median(r["retrieve"] for r in out["rows"])
            out["overhead_ms"] = statistics.median(r["overhead"] for r in out["rows"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    questions = load()
    res = run(questions)
    rows = res["rows"]
    answerable = [r for r in rows if r["kind"] == "answerable"]
    lines = [
        "| questions | retrieval hit@1 (baseline) | first citation answers | cited files answer "
        "| verbatim sentences |",
        "|---|---|---|---|---|",
    ]
    for style in (*STYLES, None):
        part = [r for r in answerable if style is None or r["style"] == style]
        cited = sum(r["cited"] for r in part)
        sentences = sum(r["sentences"] for r in part)
        lines.append(
            f"| {style or 'all answerable'} ({len(part)}) | {sum(r['hit1'] for r in part)}/"
            f"{len(part)} | {sum(r['first'] for r in part)}/{len(part)} | "
            f"{sum(r['cited_ok'] for r in part)}/{cited} | "
            f"{sum(r['verbatim'] for r in part)}/{sentences} |"
        )
    unanswerable = [r for r in rows if r["kind"] == "unanswerable"]
    once, whole = stream_check_ms(*synthetic_answer())
    body = "\n".join(
        [
            "Sample corpus (kern + erweitert), all-MiniLM-L6-v2, hybrid, 6 sources, no LLM "
            "(`answer(use_llm=False)`, refusal off for the citation columns). Questions: "
            "`bench/data/osp_corpus_questions.jsonl`. " + machine_line(),
            "",
            *lines,
            "",
            "- Refusal (top hit's calibrated relevance below the threshold), answered "
            "answerable / refused unanswerable: "
            + "; ".join(
                f"{t}{' (default)' if t == res['threshold'] else ''}: "
                f"{sum(r['top'] >= t for r in answerable)}/{len(answerable)} · "
                f"{sum(r['top'] < t for r in unanswerable)}/{len(unanswerable)}"
                for t in (0.5, 0.6, 0.7, 0.8, 0.9)
            )
            + ".",
            f"- Latency (median per question): `answer(use_llm=False)` {res['answer_ms']:.1f} "
            f"ms, of which retrieval (the baseline, `query` with 6 results) "
            f"{res['retrieve_ms']:.1f} ms and sentence scoring + citations "
            f"{res['overhead_ms']:.1f} ms "
            f"(×{(res['retrieve_ms'] + res['overhead_ms']) / res['retrieve_ms']:.2f} of "
            "retrieval).",
            f"- Citation check of a 2,500-character answer: {once:.2f} ms once; checking every "
            f"prefix of a stream in 5-character deltas (500 checks) {whole:.0f} ms in total "
            "(per delta, well under a token's generation time).",
            "",
            "Reproduce: `.venv/bin/python bench/answers.py --write` (timings: on a quiet machine).",
        ]
    )
    print(body)
    if args.write:
        write_section("answers", "Answers without an LLM: citations and cost (sample corpus)", body)


if __name__ == "__main__":
    main()
