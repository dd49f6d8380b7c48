"""Operations commands of ``osp``: backup, export/import, migrate, doctor.

Each parses, calls one function of ``osprag.ops``, and renders. Success prints one summary
line (cron mails and log scrapers read it); errors are one line on stderr with the error's exit
code (README table), as for every ``osp`` command.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cli import _emit, _err, _out, _state
from .errors import InvalidInput

if TYPE_CHECKING:
    from .knowledge_base import KnowledgeBase


@contextmanager
def _writer(wait: float | None = None) -> Iterator[KnowledgeBase]:
    settings = _state().settings
    if wait is not None:
        settings = settings.model_copy(update={"lock_timeout": wait})
    from .knowledge_base import KnowledgeBase

    kb = KnowledgeBase.open(settings)
    try:
        yield kb
    finally:
        kb.close()


def _bar(json_mode: bool) -> Progress:
    show = not (_state().quiet or json_mode) and sys.stderr.isatty()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err(),
        disable=not show,
    )


def _key(key_file: Path | None) -> bytes | None:
    from .ops.backup import configured_key

    return configured_key(_state().settings, key_file)


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


_key_option = click.option(
    "--key-file",
    type=click.Path(path_type=Path),
    help="256-bit key file (default OSP_BACKUP_KEY_FILE)",
)
_json_option = click.option("--json", "json_mode", is_flag=True, help="machine-readable output")


@click.group()
def backup() -> None:
    """Consistent, verified backups of every layer (see docs/operations.md)."""


@backup.command("create")
@click.option("--tag", help="label in the archive name, e.g. nightly")
@click.option(
    "--wait", type=float, help="seconds to wait for a running writer (default: lock_timeout)"
)
@_key_option
@_json_option
def backup_create(
    tag: str | None, wait: float | None, key_file: Path | None, json_mode: bool
) -> None:
    """Write a backup archive (writes pause while it runs; reads go on)."""
    from .ops.backup import create_backup

    _state(json_mode)
    key = _key(key_file)
    with _writer(wait) as kb:
        info = create_backup(kb, tag=tag, key=key)
    if json_mode:
        _emit(info.to_dict())
    else:
        click.echo(
            f"backup ok: {info.path} size={info.size} {_counts(info.counts)} "
            f"encrypted={'yes' if info.encrypted else 'no'} seconds={info.seconds:.1f}"
        )


@backup.command("list")
@_json_option
def backup_list(json_mode: bool) -> None:
    """List archives, newest first: date, tag, size, counts."""
    from .ops.backup import backup_dir, list_backups

    state = _state(json_mode)
    rows = list_backups(state.settings)
    if json_mode:
        _emit([r.to_dict() for r in rows])
        return
    if not rows:
        _out().print(f"no backups in {backup_dir(state.settings)}")
        return
    table = Table(title=f"backups in {backup_dir(state.settings)}")
    for col in ("created (UTC)", "tag", "size", "chunks", "encrypted", "file"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.created,
            r.tag or "",
            f"{r.size / 1e6:.1f} MB",
            _counts(r.counts) or "?",
            "yes" if r.encrypted else "no",
            Path(r.path).name,
        )
    _out().print(table)


@backup.command("verify")
@click.argument("archive", type=click.Path(path_type=Path))
@_key_option
@_json_option
def backup_verify(archive: Path, key_file: Path | None, json_mode: bool) -> None:
    """Check an archive completely (hashes, paths, manifest, every record) without restoring."""
    from .ops.backup import verify_backup

    _state(json_mode)
    report = verify_backup(archive, key=_key(key_file))
    if json_mode:
        _emit(report.to_dict())
    else:
        click.echo(f"verify ok: {archive} created={report.created} {_counts(report.counts)}")


@backup.command("prune")
@click.option("--keep-daily", type=int, required=True, help="newest archive of the last N days")
@click.option("--keep-weekly", type=int, required=True, help="newest archive of the last M weeks")
@click.option("--dry-run", is_flag=True, help="show what would be deleted")
@_json_option
def backup_prune(keep_daily: int, keep_weekly: int, dry_run: bool, json_mode: bool) -> None:
    """Delete archives outside the retention policy (the newest is always kept)."""
    from .ops.backup import prune_backups

    state = _state(json_mode)
    report = prune_backups(
        state.settings, keep_daily=keep_daily, keep_weekly=keep_weekly, dry_run=dry_run
    )
    if json_mode:
        _emit(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    for path in report.deleted:
        _out().print(f"{verb} {path}")
    click.echo(
        f"prune ok: kept={len(report.kept)} {verb.replace(' ', '_')}={len(report.deleted)} "
        f"freed={report.freed_bytes}"
    )


@backup.command("restore")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--layer", "-l", "layer_names", multiple=True, help="only these layers")
@click.option("--reembed", is_flag=True, help="re-embed texts if the archive's model differs")
@click.option("--no-pre-backup", is_flag=True, help="skip the backup of the current state")
@click.option("--wait", type=float, help="seconds to wait for a running writer")
@click.option("--yes", is_flag=True, help="confirm: this replaces the layers' current data")
@_key_option
@_json_option
def backup_restore(
    archive: Path,
    layer_names: tuple[str, ...],
    reembed: bool,
    no_pre_backup: bool,
    wait: float | None,
    yes: bool,
    key_file: Path | None,
    json_mode: bool,
) -> None:
    """Verify an archive, back up the current state, then replace the layers atomically."""
    from .ops.backup import restore_backup

    _state(json_mode)
    if not yes:
        raise InvalidInput(
            f"refusing to replace the store's layers with {archive.name} without confirmation",
            hint="pass --yes (a pre-restore backup is taken first)",
        )
    key = _key(key_file)
    with _writer(wait) as kb, _bar(json_mode) as bar:
        task = bar.add_task("restore", total=None)
        report = restore_backup(
            kb,
            archive,
            key=key,
            layers=list(layer_names) or None,
            reembed=reembed,
            pre_backup=not no_pre_backup,
            progress=lambda n: bar.advance(task, n),
        )
    if json_mode:
        _emit(report.to_dict())
    else:
        counts = {r.layer: r.chunks for r in report.layers}
        click.echo(
            f"restore ok: {archive} {_counts(counts)} epoch={report.epoch} "
            f"pre_restore_backup={report.pre_restore_backup or '-'} seconds={report.seconds:.1f}"
        )


@backup.command("keygen")
@click.argument("file", type=click.Path(path_type=Path))
def backup_keygen(file: Path) -> None:
    """Create a random 256-bit key file (mode 0600) for encrypted backups."""
    from .ops.archive import generate_key

    generate_key(file)
    click.echo(f"key written to {file}: keep a copy off this machine; without it no restore")


@click.command("export")
@click.argument("layer")
@click.argument("file", type=click.Path(path_type=Path))
@_json_option
def export_cmd(layer: str, file: Path, json_mode: bool) -> None:
    """Export a layer with embeddings to JSONL (gzip if FILE ends in .gz)."""
    from .ops.transfer import export_layer

    _state(json_mode)
    with _writer() as kb:
        report = export_layer(kb, layer, file)
    if json_mode:
        _emit(report.to_dict())
    else:
        click.echo(
            f"export ok: {layer} → {file} chunks={report.chunks} documents={report.documents} "
            f"bytes={report.bytes} seconds={report.seconds:.1f}"
        )


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--layer", "-l", help="target layer (default: the file's)")
@click.option("--replace", is_flag=True, help="replace the layer atomically instead of merging")
@click.option("--reembed", is_flag=True, help="re-embed texts if the file's model differs")
@_json_option
def import_cmd(
    file: Path, layer: str | None, replace: bool, reembed: bool, json_mode: bool
) -> None:
    """Import a layer file (merge by id; --replace swaps the whole layer). Idempotent."""
    from .ops.importer import import_file

    _state(json_mode)
    with _writer() as kb, _bar(json_mode) as bar:
        task = bar.add_task("import", total=None)
        report = import_file(
            kb,
            file,
            layer=layer,
            replace=replace,
            reembed=reembed,
            progress=lambda n: bar.advance(task, n),
        )
    if json_mode:
        _emit(report.to_dict())
    else:
        click.echo(
            f"import ok: {file} → {report.layer} mode={report.mode} chunks={report.chunks} "
            f"documents={report.documents} reembedded={'yes' if report.reembedded else 'no'}"
        )


@click.command("migrate")
@click.option("--from", "source", required=True, help="data dir or http(s)://host:port[?database=]")
@click.option("--to", "dest", required=True, help="data dir or http(s)://host:port[?database=]")
@click.option("--layer", "-l", "layer_names", multiple=True, help="layer(s), default all")
@click.option(
    "--sample", type=int, default=50, show_default=True, help="records compared at the end"
)
@click.option("--wait", type=float, help="seconds to wait for a writer on either side")
@_json_option
def migrate_cmd(
    source: str,
    dest: str,
    layer_names: tuple[str, ...],
    sample: int,
    wait: float | None,
    json_mode: bool,
) -> None:
    """Copy layers between stores (resumable), then verify counts and a sample of vectors."""
    from .ops.migrate import endpoint_settings, migrate

    state = _state(json_mode)
    base = state.settings
    tasks: dict[str, Any] = {}
    with _bar(json_mode) as bar:

        def on_start(layer: str, total: int, done: int) -> None:
            tasks[layer] = bar.add_task(f"migrate {layer}", total=total, completed=done)

        def progress(n: int) -> None:
            bar.advance(list(tasks.values())[-1], n)

        report = migrate(
            endpoint_settings(base, source),
            endpoint_settings(base, dest),
            layers=list(layer_names) or None,
            sample=sample,
            lock_timeout=wait,
            on_start=on_start,
            progress=progress,
        )
    if json_mode:
        _emit(report.to_dict())
        return
    for r in report.layers:
        resumed = f" (resumed at {r.resumed_from})" if r.resumed_from else ""
        _out().print(
            f"{r.layer}: {r.dest_count}/{r.source_count} records{resumed}, {r.sampled} sampled "
            "and identical"
        )
    click.echo(
        f"migrate ok: {report.source} → {report.dest} documents={report.documents} "
        f"epoch={report.epoch} seconds={report.seconds:.1f}"
    )


@click.command("doctor")
@_json_option
def doctor_cmd(json_mode: bool) -> None:
    """Health checks with a remedy each; exit 1 when any check fails."""
    from .ops.doctor import run_doctor

    state = _state(json_mode)
    report = run_doctor(lambda: state.settings)
    if json_mode:
        _emit(report.to_dict())
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in report.checks:
            line = f"[{colour[c.status]}]{c.status:4}[/] {c.name}: {c.detail}"
            if c.remedy and c.status != "ok":
                line += f"\n      → {c.remedy}"
            _out().print(line, highlight=False)
    click.get_current_context().exit(report.exit_code)


@click.command("repair")
@click.argument("layer")
@click.option("--reembed", is_flag=True, help="embed texts whose vector is nowhere else")
@click.option("--accept-loss", is_flag=True, help="rebuild even if some vectors are lost")
@_key_option
@_json_option
def repair_cmd(
    layer: str, reembed: bool, accept_loss: bool, key_file: Path | None, json_mode: bool
) -> None:
    """Rebuild a layer with a torn or missing vector index (cache, backup, re-embedding)."""
    from .ops.repair import repair_layer

    _state(json_mode)
    key = _key(key_file)
    with _writer() as kb, _bar(json_mode) as bar:
        task = bar.add_task(f"repair {layer}", total=None)
        report = repair_layer(
            kb,
            layer,
            key=key,
            reembed=reembed,
            accept_loss=accept_loss,
            progress=lambda n: bar.advance(task, n),
        )
    if json_mode:
        _emit(report.to_dict())
        return
    click.echo(
        f"repair ok: {layer} records={report.records} from_cache={report.from_cache} "
        f"from_backup={report.from_backup} reembedded={report.reembedded} "
        f"lost={len(report.lost)} backup={report.backup or '-'} epoch={report.epoch}"
    )
    for rid in report.lost[:20]:
        _out().print(f"lost: {rid}")


COMMANDS = (backup, export_cmd, import_cmd, migrate_cmd, doctor_cmd, repair_cmd)
