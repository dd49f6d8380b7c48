"""One writer per embedded data dir; a second writer process is refused in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from osprag import KnowledgeBase, StoreLocked
from osprag.embedding import Embedder
from osprag.locking import is_locked, read_holder

from .conftest import base_settings

HOLDER = textwrap.dedent(
    """
    import sys, time
    from osprag import KnowledgeBase, Settings
    kb = KnowledgeBase.open(Settings(data_dir=sys.argv[1], embedding_backend="torch"))
    print("locked", flush=True)
    sys.stdin.readline()
    kb.close()
    """
)


def test_second_writer_process_is_refused(tmp_path: Path, embedder: Embedder) -> None:
    settings = base_settings(tmp_path)
    with KnowledgeBase.open(settings, embedder=embedder) as kb:
        kb.add("kern", ["Bestehender Eintrag"], ids=["a"])
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(settings.data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert is_locked(settings.data_dir)
        holder = read_holder(settings.data_dir)
        assert holder is not None and holder["pid"] == proc.pid
        with pytest.raises(StoreLocked) as info:
            KnowledgeBase.open(settings, embedder=embedder)
        assert f"pid {proc.pid}" in str(info.value)
        # readers are not blocked and see the data
        with KnowledgeBase.open(settings, embedder=embedder, read_only=True) as reader:
            assert reader.count("kern") == 1
            assert reader.query("Eintrag").hits[0].id == "a"
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    assert not is_locked(settings.data_dir)
    with KnowledgeBase.open(settings, embedder=embedder) as kb:
        kb.add("kern", ["Zweiter Eintrag"], ids=["b"])
        assert kb.count("kern") == 2


def test_lock_released_on_close_and_read_only_cannot_write(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = base_settings(tmp_path)
    kb = KnowledgeBase.open(settings, embedder=embedder)
    with pytest.raises(StoreLocked):
        KnowledgeBase.open(settings, embedder=embedder)
    kb.close()
    with KnowledgeBase.open(settings, embedder=embedder, read_only=True) as ro:
        from osprag import AccessDenied

        with pytest.raises(AccessDenied):
            ro.add("kern", ["x"])
    KnowledgeBase.open(settings, embedder=embedder).close()
