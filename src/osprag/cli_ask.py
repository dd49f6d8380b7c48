"""``osp ask``: an answer with checked citations, streamed to the terminal (see docs/answers.md).

Exit codes: 0 answered (or refused because no source was relevant enough — that is an
answer), 11 when the LLM failed (the sources and the extractive answer are still printed),
other codes from the README table for store and input errors.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from .errors import LLMError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .generate.answerer import Answer, AnswerEvent


def _source_line(n: int, answer: Answer, cited: set[int]) -> str:
    from .generate.render import source_line

    hit = answer.sources[n - 1]
    relevance = f"{hit.relevance:.2f}" if hit.relevance is not None else "–"
    mark = "*" if n in cited else " "
    return f"{mark}{source_line(n, hit, answer.language)}  (relevance {relevance})"


def _render_sources(console: Console, answer: Answer, quiet: bool) -> None:
    if not answer.sources:
        return
    cited = {c.n for c in answer.citations}
    urls = {c.n: c.url for c in answer.citations if c.url}
    heading = "Quellen" if answer.language == "de" else "Sources"
    if answer.refused:
        heading += " (unter der Schwelle)" if answer.language == "de" else " (below threshold)"
    console.print("" if quiet else f"\n[bold]{heading}[/]")
    for n in range(1, len(answer.sources) + 1):
        line = escape(_source_line(n, answer, cited))
        console.print(line if quiet or n in cited else f"[dim]{line}[/]")
        if n in urls:
            console.print(f"     {escape(str(urls[n]))}")


@click.command("ask")
@click.argument("question")
@click.option("--layer", "-l", "layers", multiple=True, help="layer(s), default all")
@click.option("--where", help="metadata filter JSON")
@click.option("--sources", "-n", "n_sources", type=int, help="chunks given to the model")
@click.option("--min-score", type=float, help="refuse below this relevance (OSP_ANSWER_MIN_SCORE)")
@click.option(
    "--clearance",
    type=click.IntRange(1, 4),
    default=4,
    show_default=True,
    help="answer as a principal with this clearance",
)
@click.option("--no-llm", is_flag=True, help="extractive answer: the sources' best sentences")
@click.option("--json", "json_mode", is_flag=True, help="the answer as JSON (not streamed)")
def ask_cmd(
    question: str,
    layers: tuple[str, ...],
    where: str | None,
    n_sources: int | None,
    min_score: float | None,
    clearance: int,
    no_llm: bool,
    json_mode: bool,
) -> None:
    """Answer QUESTION from the sources, citing [n] file, page and layer."""
    from .cli import _emit, _kb, _parse_json, _state
    from .principal import Principal

    state = _state(json_mode)
    options = dict(
        layers=list(layers) or None,
        where=_parse_json(where, "--where"),
        n_sources=n_sources,
        min_score=min_score,
        use_llm=not no_llm,
        principal=Principal("cli", clearance, "reader"),
    )
    with _kb(read_only=True) as kb:
        if json_mode:
            result = kb.answer(question, **options)
            _emit(result.to_dict())
        else:
            result = _stream(kb.answer_stream(question, **options), state.quiet)
    if result.llm_failed:
        click.get_current_context().exit(LLMError.exit_code)


def _stream(events: Iterator[AnswerEvent], quiet: bool) -> Answer:
    console = Console(soft_wrap=True, highlight=False)
    streamed = ""
    final: Answer | None = None
    for event in events:
        if event.type == "delta":
            streamed += event.text
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif event.type == "done":
            final = event.answer
    assert final is not None
    if final.text != streamed:  # corrected at the end: show the checked text
        console.print("\n" + escape(final.text))
    sys.stdout.write("\n")
    if not quiet:
        for warning in final.warnings:
            Console(stderr=True).print(f"[yellow]warning[/] {escape(warning)}")
    _render_sources(console, final, quiet)
    return final
