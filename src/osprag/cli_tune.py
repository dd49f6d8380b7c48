"""`osp tune`: HNSW recall against exact search; registered on the ``osp`` group in ``cli.py``."""

from __future__ import annotations

import click
from rich.table import Table

from .cli import _emit, _kb, _out, _state
from .errors import InvalidInput
from .tune import DEFAULT_GRID, tune_layer


@click.command()
@click.option("--layer", "-l", "layer_names", multiple=True, help="layer(s); default all")
@click.option(
    "--ef",
    "grid",
    default=",".join(map(str, DEFAULT_GRID)),
    show_default=True,
    help="ef_search values to measure, comma-separated",
)
@click.option("--samples", default=200, show_default=True, help="sampled vectors per layer")
@click.option("--target", default=0.95, show_default=True, help="recall@10 to reach")
@click.option("--dry-run", is_flag=True, help="measure only, keep the current ef_search")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def tune(
    layer_names: tuple[str, ...],
    grid: str,
    samples: int,
    target: float,
    dry_run: bool,
    json_mode: bool,
) -> None:
    """Measure HNSW recall@10 vs exact search over ef_search and keep the best value."""
    _state(json_mode)
    try:
        values = tuple(int(v) for v in grid.split(",") if v.strip())
    except ValueError:
        raise InvalidInput(f"--ef must be comma-separated integers, got {grid!r}") from None
    with _kb() as kb:
        names = list(layer_names) or kb.settings.ordered_layers()
        reports = []
        for name in names:
            kb.settings.layer(name)
            if kb.collection_for(name) is None:
                continue
            reports.append(
                tune_layer(kb, name, grid=values, samples=samples, target=target, apply=not dry_run)
            )
    if json_mode:
        _emit({"layers": [r.to_dict() for r in reports]})
        return
    for r in reports:
        table = Table(title=f"layer {r.layer}: {r.count} chunks, {r.samples} sampled vectors")
        for col in ("ef_search", "recall@10", "p50 ms", "p95 ms", ""):
            table.add_column(col)
        for p in r.points:
            mark = "chosen" if p.ef_search == r.chosen_ef_search else ""
            table.add_row(
                str(p.ef_search),
                f"{p.recall_at_10:.3f}",
                f"{p.p50_ms:.2f}",
                f"{p.p95_ms:.2f}",
                mark,
            )
        _out().print(table)
        state = "applied" if r.applied else "unchanged"
        _out().print(
            f"ef_search {r.previous_ef_search} → {r.chosen_ef_search} ({state}; target {r.target})"
        )
        for line in r.advice:
            _out().print(f"note: {line}")
