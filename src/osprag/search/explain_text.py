"""One readable line from a hit's ``explain`` record (``osp query --explain``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def explain_line(explain: Mapping[str, Any]) -> str:
    parts = []
    for leg, label in (("dense", "dense cosine"), ("lexical", "BM25")):
        value = explain.get(leg)
        parts.append(f"{label} {value['score']:.3f} (#{value['rank']})" if value else f"{label} —")
    parts.append(f"fused {explain.get('fused', 0.0):.3f}")
    parts.append(f"calibrated {explain.get('relevance', 0.0):.2f} [{explain.get('calibration')}]")
    if "rerank" in explain:
        parts.append(f"rerank {explain['rerank']:.3f}")
    return " · ".join(parts)
