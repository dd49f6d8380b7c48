"""``osp eval``: score the current configuration on a BEIR-style set (see evaluation.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@click.command("eval")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(["dense", "lexical", "hybrid"]),
    help="search mode (default OSP_SEARCH_MODE: hybrid)",
)
@click.option("--layer", "-l", help="layer the set is loaded into (default the first layer)")
@click.option("--run-out", type=click.Path(path_type=Path), help="write a TREC run file (top 100)")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def eval_cmd(
    dataset_dir: Path, mode: str | None, layer: str | None, run_out: Path | None, json_mode: bool
) -> None:
    """Load a BEIR-style set into a throwaway store and report nDCG@10, Recall@10, MRR@10."""
    from .cli import _emit, _state
    from .evaluation import evaluate

    state = _state(json_mode)
    show = not (state.quiet or json_mode) and sys.stderr.isatty()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(
                    {"embed": "embed chunks"}.get(stage, stage), total=total
                )
            bar.update(tasks[stage], completed=done, total=total)

        report = evaluate(
            dataset_dir,
            settings=state.settings,
            mode=mode,
            layer=layer,
            run_out=run_out,
            progress=progress,
        )
    if json_mode:
        _emit(report.to_dict())
        return
    console = Console(soft_wrap=True)
    console.print(
        f"{report.dataset}: {report.queries} queries, {report.documents} documents "
        f"({report.chunks} chunks), mode {report.mode}, model {report.model}"
        + (f", alpha {report.alpha}" if report.mode == "hybrid" else "")
    )
    console.print(
        f"nDCG@10 {report.ndcg_at_10:.4f}   Recall@10 {report.recall_at_10:.4f}   "
        f"MRR@10 {report.mrr_at_10:.4f}   ({report.seconds:.1f}s)"
    )
    if report.run_file:
        console.print(f"run file: {report.run_file}")
