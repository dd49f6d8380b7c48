"""Score calibration: pure logic (fitting, error, features) and the shipped parameters."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from osprag.search import calibration as cal
from osprag.search.calibration import (
    LegScores,
    features,
    fit_logistic,
    leg_ranks,
    reliability,
)


def test_logistic_fit_recovers_a_known_probability() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(4000, 1))
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-(2 * x[:, 0] - 1)))).astype(int)
    mean, scale, coef, intercept = fit_logistic(x, y.tolist())
    model = cal.Calibrator("dense", "m", mean, scale, coef, intercept)
    probe = np.array([[-1.0], [0.5], [2.0]])
    expected = 1 / (1 + np.exp(-(2 * probe[:, 0] - 1)))
    assert model.predict(probe) == pytest.approx(expected, abs=0.05)
    ece, table = reliability(model.predict(x).tolist(), y.tolist())
    assert ece < 0.03 and sum(row["n"] for row in table) == 4000


def test_reliability_sees_overconfidence() -> None:
    ece, _ = reliability([0.9] * 100, [1] * 50 + [0] * 50)
    assert ece == pytest.approx(0.4)


def test_features_are_comparable_across_queries() -> None:
    cands = {
        "a": LegScores(0.8, 12.0, 0.9),
        "b": LegScores(0.6, None, 0.5),
        "c": LegScores(None, 4.0, 0.3),
    }
    feats = features("hybrid", cands, query_weight=4.0)
    row = dict(zip(feats.names, feats.rows[feats.keys.index("c")], strict=True))
    assert row["cosine"] == pytest.approx(0.6)  # missing leg: the leg's lowest value
    assert row["bm25_per_term"] == pytest.approx(1.0)  # 4.0 / 4 query terms
    assert row["gap"] == pytest.approx(0.6) and row["margin"] == pytest.approx(0.4)
    # explain's per-leg ranks, over the candidates each leg returned
    assert leg_ranks({k: c.cosine for k, c in cands.items() if c.cosine is not None}) == {
        "a": 1,
        "b": 2,
    }
    assert leg_ranks({k: c.bm25 for k, c in cands.items() if c.bm25 is not None}) == {
        "a": 1,
        "c": 2,
    }


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_shipped_entries_give_probabilities_that_fall_with_the_gap(mode: str) -> None:
    entry, source = cal.lookup(cal.DEFAULT_MODEL_KEY, mode)
    assert entry is not None and not source.startswith("fallback")
    strong = {"a": LegScores(0.7, 20.0, 0.95), "b": LegScores(0.3, 2.0, 0.2)}
    probs, _, _ = cal.calibrate(mode, cal.DEFAULT_MODEL_KEY, strong, 4.0)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert probs["a"] > probs["b"]


def test_unknown_model_falls_back_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        entry, source = cal.lookup("someone/else-model", "dense")
    assert entry is not None and source == f"fallback:{cal.DEFAULT_MODEL_KEY}|dense"
    assert "no score calibration" in caplog.text
