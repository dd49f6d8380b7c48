"""Calibrated relevance: P(this hit is relevant) in [0, 1], so one threshold means one thing.

Raw scores do not transfer between queries: the lexical leg's BM25 grows with the number of query
terms, and the hybrid score divides BM25 by the query's best, so every query's top lexical hit
gets 1.0 whether it answers or not. A logistic model per mode therefore looks at features that
*are* comparable across queries: the dense cosine, BM25 per query term, the hit's gap to the
query's top hit and the top hit's margin over the runner-up (a confident query has a clear
winner). It is fitted on the dev sets' qrels (``scripts/fit_calibration.py``), one entry per
(model identity, mode) in ``calibration.json``; the lexical leg does not depend on the model.
A model without an entry falls back to the default model's entry for that mode (logged once, and
named in ``explain``): its scores are then only roughly calibrated — refit for your model.

Features use values that are known before ranking, so the calibrated score can filter
(``min_score``) without a second pass. It does not reorder: the ranking stays by the mode's
score, so in hybrid mode a lower-ranked hit can carry a slightly higher calibrated score.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_KEY = "sentence-transformers/all-MiniLM-L6-v2"
LEXICAL_KEY = "*"  # the lexical leg's calibration does not depend on the embedding model
FEATURES: dict[str, tuple[str, ...]] = {
    "dense": ("cosine", "gap", "margin"),
    "lexical": ("bm25_per_term", "gap", "margin"),
    "hybrid": ("cosine", "bm25_per_term", "fused", "gap", "margin"),
}


@dataclass(frozen=True)
class Calibrator:
    """Standardised features → logistic; what ``calibration.json`` stores per entry."""

    mode: str
    model: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: str = ""

    def predict(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        z = (rows - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.coef) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -40, 40))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "model": self.model,
            "features": list(FEATURES[self.mode]),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(
            mode=str(data["mode"]),
            model=str(data["model"]),
            mean=tuple(float(x) for x in data["mean"]),
            scale=tuple(float(x) for x in data["scale"]),
            coef=tuple(float(x) for x in data["coef"]),
            intercept=float(data["intercept"]),
            fitted_on=str(data.get("fitted_on", "")),
        )


def entry_key(model: str, mode: str) -> str:
    return f"{LEXICAL_KEY if mode == 'lexical' else model}|{mode}"


@lru_cache(maxsize=1)
def shipped() -> dict[str, Calibrator]:
    """The calibrations shipped inside the package."""
    text = resources.files("osprag.search").joinpath("calibration.json").read_text("utf-8")
    data = json.loads(text)
    return {key: Calibrator.from_dict(entry) for key, entry in data["entries"].items()}


_WARNED: set[str] = set()


def lookup(model: str, mode: str) -> tuple[Calibrator | None, str]:
    """The calibrator for (model, mode) and the key it came from ("fallback:" when borrowed)."""
    table = shipped()
    key = entry_key(model, mode)
    if key in table:
        return table[key], key
    fallback = entry_key(DEFAULT_MODEL_KEY, mode)
    if model not in _WARNED:
        _WARNED.add(model)
        log.warning(
            "no score calibration for model %s: using %s's (refit with "
            "scripts/fit_calibration.py for calibrated scores)",
            model,
            DEFAULT_MODEL_KEY,
        )
    return table.get(fallback), f"fallback:{fallback}"


# ---------------------------------------------------------------- features


@dataclass
class LegScores:
    """One candidate's raw values from each leg (None: the leg did not return it)."""

    cosine: float | None
    bm25: float | None
    fused: float


@dataclass
class QueryFeatures:
    """Feature rows for one query's candidates, in the order of ``keys``."""

    keys: list[Any]
    rows: np.ndarray[Any, Any]
    names: tuple[str, ...]


def leg_ranks(values: Mapping[Any, float]) -> dict[Any, int]:
    """1-based rank per key by descending score (ties by key), as ``explain`` reports it."""
    order = sorted(values, key=lambda k: (-values[k], str(k)))
    return {k: i for i, k in enumerate(order, 1)}


def features(mode: str, cands: Mapping[Any, LegScores], query_weight: float) -> QueryFeatures:
    """Comparable-across-queries features per candidate (see the module docstring).

    ``query_weight``: the summed weight of the query's analysed terms, so BM25 per query term
    does not grow with the question's length. A candidate one leg did not return gets that
    leg's lowest value in this query (it ranked below everything the leg returned).
    """
    keys = list(cands)
    cos = {k: c.cosine for k, c in cands.items() if c.cosine is not None}
    bm = {k: c.bm25 / max(query_weight, 1.0) for k, c in cands.items() if c.bm25 is not None}
    own = {"dense": cos, "lexical": bm}.get(mode)
    primary = own if own is not None else {k: c.fused for k, c in cands.items()}
    ordered = sorted(primary.values(), reverse=True)
    top = ordered[0] if ordered else 0.0
    margin = (ordered[0] - ordered[1]) if len(ordered) > 1 else (ordered[0] if ordered else 0.0)
    cos_floor = min(cos.values(), default=0.0)
    bm_floor = min(bm.values(), default=0.0)
    names = FEATURES[mode]
    n = len(keys)
    low = min(ordered, default=0.0)
    # one array per feature instead of a dict per candidate (a profiled hot spot)
    columns: dict[str, Callable[[], np.ndarray[Any, Any]]] = {
        "cosine": lambda: np.fromiter((cos.get(k, cos_floor) for k in keys), np.float64, n),
        "bm25_per_term": lambda: np.fromiter((bm.get(k, bm_floor) for k in keys), np.float64, n),
        "fused": lambda: np.fromiter((cands[k].fused for k in keys), np.float64, n),
        "gap": lambda: top - np.fromiter((primary.get(k, low) for k in keys), np.float64, n),
        "margin": lambda: np.full(n, margin, dtype=np.float64),
    }
    rows = np.empty((n, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        rows[:, j] = columns[name]()
    return QueryFeatures(keys, rows, names)


def calibrate(
    mode: str, model: str, cands: Mapping[Any, LegScores], query_weight: float
) -> tuple[dict[Any, float], QueryFeatures, str]:
    """Calibrated relevance per candidate, the features it was computed from, and the source."""
    feats = features(mode, cands, query_weight)
    calibrator, source = lookup(model, mode)
    if calibrator is None or not feats.keys:
        # Nothing shipped at all (a stripped install): the fused score is the best we have.
        return {k: float(c.fused) for k, c in cands.items()}, feats, "uncalibrated"
    probs = calibrator.predict(feats.rows)
    return {k: float(p) for k, p in zip(feats.keys, probs, strict=True)}, feats, source


# ---------------------------------------------------------------- fitting and checking


def fit_logistic(
    rows: np.ndarray[Any, Any], labels: Sequence[int], *, l2: float = 1e-3, iters: int = 50
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], float]:
    """L2-regularised logistic regression by Newton steps on standardised features.

    Returns (mean, scale, coef, intercept). Small and dependency-free: a few thousand rows and
    five features need no solver library.
    """
    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * len(x))
    reg[-1] = 0.0  # the intercept is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -40, 40)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return (
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in w[:-1]),
        float(w[-1]),
    )


def reliability(
    probs: Sequence[float], labels: Sequence[int], bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error (equal-width bins, weighted by count) and the table."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    table: list[dict[str, float]] = []
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        mask = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        n = int(mask.sum())
        if n == 0:
            continue
        mean_p, rate = float(p[mask].mean()), float(y[mask].mean())
        ece += n / max(len(p), 1) * abs(mean_p - rate)
        table.append({"lo": lo, "hi": hi, "n": n, "predicted": mean_p, "observed": rate})
    return ece, table


def brier(probs: Sequence[float], labels: Sequence[int]) -> float:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(p) else math.nan
