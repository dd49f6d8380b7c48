"""The ``osp`` command: a thin layer that parses, calls ``KnowledgeBase``, and renders.

Errors from osprag's tree become one line on stderr and the error's exit code (README table);
``OSP_DEBUG=1`` shows the traceback. Every read command has ``--json`` for scripts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .config import Settings, load_settings, settings_markdown
from .errors import InvalidFilter, InvalidInput, OspragError
from .principal import Principal

if TYPE_CHECKING:
    from .knowledge_base import KnowledgeBase


class _State:
    def __init__(self, overrides: dict[str, Any], quiet: bool) -> None:
        self.overrides = overrides
        self.quiet = quiet
        self.json = False
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
        return self._settings


def _out() -> Console:
    return Console(soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


class OspGroup(click.Group):
    """Maps osprag errors to one line and an exit code, for every subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OspragError as exc:
            state = ctx.obj if isinstance(ctx.obj, _State) else None
            if os.environ.get("OSP_DEBUG", "").lower() in ("1", "true", "yes"):
                traceback.print_exc()
            if state is not None and state.json:
                click.echo(json.dumps(exc.to_dict(), ensure_ascii=False))
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _state(json_mode: bool | None = None) -> _State:
    state = click.get_current_context().find_object(_State)
    assert state is not None
    if json_mode is not None:
        state.json = json_mode
    return state


@contextmanager
def _kb(read_only: bool = False) -> Iterator[KnowledgeBase]:
    from .knowledge_base import KnowledgeBase  # imports numpy; `osp ingest` may not need it

    kb = KnowledgeBase.open(_state().settings, read_only=read_only)
    try:
        yield kb
    finally:
        kb.close()


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _parse_json(value: str | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidFilter(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise InvalidFilter(f"{what} must be a JSON object")
    return data


def _parse_meta(pairs: tuple[str, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--meta {pair!r} must look like key=value")
        parsed: Any = value
        if key != "version" and value.lstrip("-").isdigit():
            parsed = int(value)
        meta[key.strip()] = parsed
    return meta


@click.group(cls=OspGroup)
@click.version_option(__version__, prog_name="osp")
@click.option("--data-dir", type=click.Path(path_type=Path), help="embedded store (OSP_DATA_DIR)")
@click.option("--chroma-url", help="Chroma server URL (OSP_CHROMA_URL)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars or decoration")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, chroma_url: str | None, quiet: bool) -> None:
    """osprag: two-layer document retrieval for QM knowledge, on ChromaDB."""
    debug = os.environ.get("OSP_DEBUG", "").lower() in ("1", "true", "yes")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s: %(message)s" if debug else "warning: %(message)s",
    )
    for noisy in ("chromadb", "httpx", "sentence_transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.ERROR)
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if chroma_url is not None:
        overrides["chroma_url"] = chroma_url
    ctx.obj = _State(overrides, quiet)


@cli.command()
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def init(json_mode: bool) -> None:
    """Create the configured layers (idempotent) and show them."""
    _state(json_mode)
    with _kb() as kb:
        for layer in kb.settings.ordered_layers():
            kb._collection(layer, create=True)
        _show_stats(kb, json_mode)


@cli.command()
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def layers(json_mode: bool) -> None:
    """List layers with their collection, size, model and warnings."""
    _state(json_mode)
    with _kb(read_only=True) as kb:
        _show_stats(kb, json_mode)


@cli.command()
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def stats(json_mode: bool) -> None:
    """Per-layer statistics: count, model identity, index config, disk size."""
    _state(json_mode)
    with _kb(read_only=True) as kb:
        _show_stats(kb, json_mode, full=True)


def _parse_layer_min(pairs: tuple[str, ...]) -> dict[str, int] | None:
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise InvalidInput(f"--layer-min {pair!r} must look like kern=2")
        out[name.strip()] = int(value)
    return out or None


def _show_stats(kb: KnowledgeBase, json_mode: bool, full: bool = False) -> None:
    rows = kb.stats()
    if json_mode:
        _emit(
            {
                "storage": kb.store.mode,
                "where": kb.store.where,
                "layers": [r.to_dict() for r in rows],
                **({"query_cache": kb.cache_stats()} if full else {}),
            }
        )
        return
    table = Table(title=f"osprag layers ({kb.store.mode}: {kb.store.where})")
    for col in ("layer", "collection", "chunks", "model", "index", "disk"):
        table.add_column(col)
    for r in rows:
        model = f"{r.model['name']} ({r.model['dimension']}d)" if r.model else "-"
        index = (
            f"{r.index['space']} M={r.index['m']} efc={r.index['ef_construction']}"
            if r.index
            else "-"
        )
        disk = f"{r.disk_bytes / 1e6:.1f} MB" if r.disk_bytes is not None else "-"
        table.add_row(r.layer, r.collection or "(empty)", str(r.count), model, index, disk)
    _out().print(table)
    if full:
        c = kb.cache_stats()
        _out().print(
            f"query cache: {c['hits']} hits / {c['misses']} misses "
            f"({c['hit_rate']:.0%}), {c['entries']}/{c['size']} entries, ttl {c['ttl_s']:g} s"
            if c.get("enabled")
            else "query cache: off"
        )
    for r in rows:
        for w in r.warnings:
            _err().print(f"[yellow]warning[/]: layer {r.layer}: {w}")


@cli.command()
@click.argument("text")
@click.option("--layer", "-l", required=True, help="target layer")
@click.option("--meta", "-m", multiple=True, help="metadata key=value (repeatable)")
@click.option("--id", "record_id", help="record id (default: deterministic hash)")
@click.option("--upsert", is_flag=True, help="replace a record with the same id")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def add(
    text: str,
    layer: str,
    meta: tuple[str, ...],
    record_id: str | None,
    upsert: bool,
    json_mode: bool,
) -> None:
    """Add one text to a layer."""
    _state(json_mode)
    with _kb() as kb:
        op = kb.upsert if upsert else kb.add
        result = op(
            layer, [text], ids=[record_id] if record_id else None, metadatas=[_parse_meta(meta)]
        )
    if json_mode:
        _emit(result.to_dict())
    else:
        _out().print(f"{result.op}: {result.ids[0]} → layer [bold]{layer}[/]")


@cli.command()
@click.argument("text", nargs=-1, required=True)
@click.option("--layer", "-l", "layer_names", multiple=True, help="layer(s) to search")
@click.option("--where", help='metadata filter JSON, e.g. \'{"status": "AKTIV"}\'')
@click.option("--where-document", help='text filter JSON, e.g. \'{"$contains": "Crimp"}\'')
@click.option("-n", "--n-results", default=5, show_default=True, type=int)
@click.option("--min-score", type=float, help="drop hits below this score")
@click.option(
    "--mode",
    type=click.Choice(["dense", "lexical", "hybrid"]),
    help="search mode (default OSP_SEARCH_MODE: hybrid)",
)
@click.option(
    "--clearance",
    type=click.IntRange(1, 4),
    default=4,
    show_default=True,
    help="search as a principal with this clearance",
)
@click.option("--history", is_flag=True, help="include obsolete and not yet valid documents")
@click.option("--no-tags", is_flag=True, help="do not turn [TAG] / TAG: into a filter")
@click.option("--no-glossary", is_flag=True, help="do not expand abbreviations and synonyms")
@click.option("--layer-min", multiple=True, help="LAYER=N: at least N hits from LAYER")
@click.option("--explain", is_flag=True, help="show each leg's raw score and rank per hit")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def query(
    text: tuple[str, ...],
    layer_names: tuple[str, ...],
    where: str | None,
    where_document: str | None,
    n_results: int,
    min_score: float | None,
    mode: str | None,
    clearance: int,
    history: bool,
    no_tags: bool,
    no_glossary: bool,
    layer_min: tuple[str, ...],
    explain: bool,
    json_mode: bool,
) -> None:
    """Search the layers (default all) and print one merged ranking."""
    _state(json_mode)
    principal = Principal("cli", clearance, "reader")
    with _kb(read_only=True) as kb:
        result = kb.query(
            " ".join(text),
            layers=list(layer_names) or None,
            n_results=n_results,
            where=_parse_json(where, "--where"),
            where_document=_parse_json(where_document, "--where-document"),
            min_score=min_score,
            principal=principal,
            mode=mode,
            include_history=history,
            route_tags=False if no_tags else None,
            expand=False if no_glossary else None,
            layer_min=_parse_layer_min(layer_min),
            explain=explain,
        )
    if json_mode:
        _emit(result.to_dict())
        return
    console = _out()
    if not result.hits:
        console.print("no results")
        return
    for hit in result.hits:
        meta = hit.metadata
        where_from = " · ".join(
            str(v)
            for v in (
                meta.get("source"),
                meta.get("page") and f"S. {meta['page']}",
                meta.get("section"),
            )
            if v
        )
        badge = "[bold green]kern[/]" if hit.layer == "kern" else f"[bold blue]{hit.layer}[/]"
        console.print(
            f"{hit.rank}. {badge} relevance {hit.relevance or 0:.2f} (score {hit.score:.3f})"
            f"  L{meta.get('access_level', '?')}"
            + f"  rev {meta.get('version', '-')} · gültig ab {meta.get('valid_from', '-')}"
            + (f"  {where_from}" if where_from else "")
            + f"  [dim]{hit.id}[/]"
        )
        if hit.explain:
            from .search.explain_text import explain_line  # the search package pulls scipy

            console.print(f"   [dim]{explain_line(hit.explain)}[/]")
        snippet = (hit.text or "").replace("\n", " ")
        console.print(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--layer", "-l", required=True, help="target layer")
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--glob", help="only files matching this pattern, e.g. '*.pdf' (no deletions)")
@click.option("--dry-run", is_flag=True, help="report what would change, write nothing")
@click.option("--meta", "-m", multiple=True, help="metadata override key=value (repeatable)")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable report")
def ingest(
    paths: tuple[Path, ...],
    layer: str,
    recursive: bool,
    glob: str | None,
    dry_run: bool,
    meta: tuple[str, ...],
    json_mode: bool,
) -> None:
    """Sync folders into a layer: new files added, changed replaced, gone deleted.

    Exit code 0: all ok; 1: some files failed (the others are in); 2: nothing could be done.
    """
    from .ingest.noop import try_noop
    from .ingest.sync import FileResult
    from .ingest.sync import Progress as IngestProgress

    state = _state(json_mode)
    show = not (state.quiet or json_mode) and sys.stderr.isatty()
    console = _err()
    overrides = _parse_meta(meta)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    ) as bar:
        files = bar.add_task("files", total=0, rate="")
        chunks = bar.add_task("chunks", total=None, rate="")
        started = time.perf_counter()
        seen = [0]

        def on_files(n: int) -> None:
            bar.update(files, total=(bar.tasks[files].total or 0) + n)

        def on_file_done(result: FileResult) -> None:
            bar.advance(files)
            if result.status == "failed" and not json_mode:
                bar.console.print(f"[red]failed[/] {result.source}: {result.reason}")

        def on_chunks(n: int) -> None:
            seen[0] += n
            rate = seen[0] / max(time.perf_counter() - started, 1e-6)
            bar.update(chunks, advance=n, rate=f"{rate:.1f} chunks/s")

        callbacks = IngestProgress(on_files, on_file_done, on_chunks)
        # embedded, nothing changed: answered from the sync's manifest without opening Chroma
        report = try_noop(
            state.settings,
            list(paths),
            layer,
            recursive=recursive,
            glob=glob,
            dry_run=dry_run,
            progress=callbacks,
        )
        if report is None:
            with _kb(read_only=dry_run) as kb:
                report = kb.ingest(
                    list(paths),
                    layer,
                    recursive=recursive,
                    glob=glob,
                    dry_run=dry_run,
                    overrides=overrides,
                    progress=callbacks,
                )
    if json_mode:
        _emit(report.to_dict())
    elif not state.quiet:
        counts = report.counts()
        table = Table(title=f"osp ingest → {layer}{' (dry run)' if dry_run else ''}")
        for key in counts:
            table.add_column(key, justify="right")
        table.add_row(*(str(v) for v in counts.values()))
        _out().print(table)
        for f in report.files:
            if f.status == "failed":
                _out().print(f"[red]failed[/] {f.source}: {f.reason}")
            for w in f.warnings:
                _out().print(f"[yellow]warning[/] {f.source}: {w}")
        _out().print(
            f"{report.chunks_written} chunks written, {report.texts_embedded} embedded "
            f"in {report.seconds:.1f}s"
        )
    click.get_current_context().exit(report.exit_code)


@cli.command("import-csv")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--layer", "-l", required=True, help="target layer")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable report")
def import_csv(file: Path, layer: str, json_mode: bool) -> None:
    """Import a CSV (columns id, text, doc_type, version, status, …): one record per row."""
    _state(json_mode)
    with _kb() as kb:
        report = kb.import_csv(file, layer)
    if json_mode:
        _emit(report.to_dict())
    else:
        _out().print(
            f"total {report.total}, added {report.added}, failed {report.failed}, "
            f"success rate {report.success_rate:.1%}"
        )
        for err in report.errors[:20]:
            _out().print(f"[red]line {err['line']}[/]: {err['reason']}")
    click.get_current_context().exit(report.exit_code)


@cli.command()
@click.option("--layer", "-l", required=True)
@click.option("--id", "ids", multiple=True, help="record id (repeatable)")
@click.option("--where", help="metadata filter JSON")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--offset", type=int, default=0)
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def get(
    layer: str, ids: tuple[str, ...], where: str | None, limit: int, offset: int, json_mode: bool
) -> None:
    """Show records by id or filter."""
    _state(json_mode)
    with _kb(read_only=True) as kb:
        records = kb.get(
            layer,
            ids=list(ids) or None,
            where=_parse_json(where, "--where"),
            limit=limit,
            offset=offset or None,
        )
    if json_mode:
        _emit([r.to_dict() for r in records])
        return
    for r in records:
        _out().print(f"[bold]{r.id}[/] {json.dumps(r.metadata, ensure_ascii=False)}\n  {r.text}")
    if not records:
        _out().print("no records")


@cli.command()
@click.option("--layer", "-l", required=True)
@click.option("--id", "ids", multiple=True, help="record id (repeatable)")
@click.option("--where", help="metadata filter JSON")
@click.option("--where-document", help="text filter JSON")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def delete(
    layer: str, ids: tuple[str, ...], where: str | None, where_document: str | None, json_mode: bool
) -> None:
    """Delete records by id or filter (resolved to ids first)."""
    _state(json_mode)
    with _kb() as kb:
        n = kb.delete(
            layer,
            ids=list(ids) or None,
            where=_parse_json(where, "--where"),
            where_document=_parse_json(where_document, "--where-document"),
        )
    if json_mode:
        _emit({"layer": layer, "deleted": n})
    else:
        _out().print(f"deleted {n} record(s) from layer {layer}")


@cli.command()
@click.argument("layer")
@click.option("--yes", is_flag=True, help="confirm: this deletes the layer's data")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def drop(layer: str, yes: bool, json_mode: bool) -> None:
    """Delete a whole layer (needs --yes)."""
    _state(json_mode)
    with _kb() as kb:
        n = kb.drop_layer(layer, yes=yes)
    if json_mode:
        _emit({"layer": layer, "dropped": n})
    else:
        _out().print(f"dropped layer {layer} ({n} records)")


@cli.command()
@click.option("--model", help="re-embed with this model (name or path)")
@click.option("--lexical", is_flag=True, help="only rebuild the lexical (BM25) index from Chroma")
@click.option("--layer", "-l", "layer_names", multiple=True, help="layer(s), default all")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def reindex(
    model: str | None, lexical: bool, layer_names: tuple[str, ...], json_mode: bool
) -> None:
    """Rebuild layers into new collections and flip them in (old layer kept until done)."""
    from .reindex import reindex as run_reindex

    state = _state(json_mode)
    if lexical:
        with _kb() as kb:
            counts = kb.rebuild_lexical(list(layer_names) or None)
        if json_mode:
            _emit({"lexical": counts})
        else:
            for layer, n in counts.items():
                _out().print(f"{layer}: lexical index rebuilt from {n} records")
        return
    show = not (state.quiet or json_mode) and sys.stderr.isatty()
    with (
        _kb() as kb,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_err(),
            disable=not show,
        ) as bar,
    ):
        task: list[Any] = []

        def on_start(layer: str, total: int) -> None:
            task.append(bar.add_task(f"reindex {layer}", total=total))

        reports = run_reindex(
            kb,
            model=model,
            layers=list(layer_names) or None,
            on_start=on_start,
            progress=lambda n: bar.advance(task[-1], n),
        )
    if json_mode:
        _emit([r.to_dict() for r in reports])
        return
    for r in reports:
        _out().print(
            f"{r.layer}: {r.count} records → {r.new_collection} "
            f"({'re-embedded' if r.reembedded else 'vectors reused'}, {r.seconds:.1f}s)"
        )
    if model:
        _out().print(f"now set OSP_EMBEDDING_MODEL={model} for every process using this store")


@cli.command("config")
@click.option("--markdown", is_flag=True, help="the settings table for the README")
@click.option("--json", "json_mode", is_flag=True, help="effective settings as JSON")
def config_cmd(markdown: bool, json_mode: bool) -> None:
    """Show the effective settings (secrets masked) or the settings table."""
    state = _state(json_mode)
    if markdown:
        click.echo(settings_markdown())
        return
    data = json.loads(state.settings.model_dump_json())
    if json_mode:
        _emit(data)
    else:
        for key, value in data.items():
            _out().print(f"[bold]{key}[/] = {json.dumps(value, ensure_ascii=False)}")


@cli.group()
def model() -> None:
    """Embedding model tools."""


@model.command("export")
@click.option("--force", is_flag=True, help="export again even if a verified export exists")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def model_export(force: bool, json_mode: bool) -> None:
    """Export the configured model to ONNX (needs torch and onnx once) and verify parity."""
    from .embedding import resolve_model_path
    from .onnx_backend import export_model

    state = _state(json_mode)
    folder = resolve_model_path(state.settings.embedding_model)
    report = export_model(state.settings, folder, force=force)
    data = {k: str(v) if isinstance(v, Path) else v for k, v in report.__dict__.items()}
    if json_mode:
        _emit(data)
    else:
        _out().print(
            f"ONNX export {'reused' if report.reused else 'written'}: {report.path} "
            f"(min cosine vs torch {report.min_cosine:.6f})"
        )


@model.command("info")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable output")
def model_info(json_mode: bool) -> None:
    """Show the configured model's identity and which backend would run it."""
    from .embedding import create_embedder

    state = _state(json_mode)
    embedder = create_embedder(state.settings)
    identity = dict(embedder.identity.__dict__)
    data = {"backend": type(embedder).__name__, "identity": identity}
    if json_mode:
        _emit(data)
    else:
        for key, value in identity.items():
            _out().print(f"[bold]{key}[/] = {value}")
        _out().print(f"[bold]backend[/] = {data['backend']}")


from .cli_ops import COMMANDS as _OPS_COMMANDS  # noqa: E402 - needs the helpers above

for _command in _OPS_COMMANDS:
    cli.add_command(_command)

from .cli_tune import tune  # noqa: E402  (needs the helpers above)

cli.add_command(tune)

from .cli_eval import eval_cmd  # noqa: E402

cli.add_command(eval_cmd)

from .cli_serve import COMMANDS as _SERVE_COMMANDS  # noqa: E402

for _command in _SERVE_COMMANDS:
    cli.add_command(_command)

from .cli_ask import ask_cmd  # noqa: E402

cli.add_command(ask_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of raising SystemExit (for in-process use)."""
    try:
        rv = cli.main(args=argv, prog_name="osp", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())
