"""Per-layer minimums in a merged ranking: e.g. at least two kern hits whenever two qualify.

A hit qualifies when it passed every filter and ``min_score``. Promoted hits displace the
lowest-ranked hits of layers that hold more than their own minimum, and the list is then
re-sorted, so a promoted hit shows its true score and rank.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from osprag.errors import InvalidInput

# (weighted score, -priority, record id, (layer, id), raw score): hits are built only for the
# returned ones, so the ranking carries keys, not Hit objects
Ranked = tuple[float, int, str, tuple[str, str], float]


def _order(t: Ranked) -> tuple[float, int, str]:
    return (t[0], t[1], t[2])


def apply_minimums(ranked: Sequence[Ranked], n: int, minimums: Mapping[str, int]) -> list[Ranked]:
    """The top ``n`` of ``ranked`` (best first), adjusted so each layer in ``minimums`` has at
    least its minimum when enough of its hits qualify."""
    chosen = list(ranked[:n])
    if minimums and len(ranked) > n:
        rest = list(ranked[n:])
        for layer, want in minimums.items():
            have = sum(1 for t in chosen if t[3][0] == layer)
            for cand in [t for t in rest if t[3][0] == layer][: max(0, want - have)]:
                counts = Counter(t[3][0] for t in chosen)
                victim = next(
                    (
                        t
                        for t in reversed(chosen)
                        if t[3][0] != layer and counts[t[3][0]] > minimums.get(t[3][0], 0)
                    ),
                    None,
                )
                if victim is None:
                    break
                chosen.remove(victim)
                chosen.append(cand)
        chosen.sort(key=_order, reverse=True)
    return chosen


def layer_minimums(
    layers: Sequence[str], configured: Mapping[str, int], given: Mapping[str, int] | None
) -> dict[str, int]:
    """Effective minimums for the searched layers: the query's, else each layer's setting."""
    given = dict(given or {})
    for name, value in given.items():
        if name not in configured:
            raise InvalidInput(f"layer_min names unknown layer {name!r}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"layer_min[{name!r}] must be an integer >= 0, got {value!r}")
    out = {name: given.get(name, configured[name]) for name in layers}
    return {k: v for k, v in out.items() if v > 0}
