"""Store: the alias registry, error mapping, unreachable servers, unwritable directories."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from osprag import KnowledgeBase, NotWritable, Settings, StoreUnavailable
from osprag.embedding import Embedder
from osprag.store import SCHEMA_VERSION, Store

from .conftest import _free_port, base_settings


def test_registry_has_schema_version_and_aliases(kb: KnowledgeBase) -> None:
    kb.add("kern", ["Erster Eintrag"])
    reg = kb.store.registry()
    assert reg["osp_schema_version"] == SCHEMA_VERSION
    assert kb.store.aliases() == {"kern": "osp_kern"}
    col = kb.store.get_collection("osp_kern")
    assert col is not None
    assert col.metadata["osp_schema_version"] == SCHEMA_VERSION
    assert col.metadata["osp_layer"] == "kern"


def test_alias_flip_is_one_write(settings: Settings) -> None:
    store = Store(settings)
    store.set_alias("kern", "osp_kern__v2")
    store.set_alias("erweitert", "osp_erweitert")
    store.set_alias("kern", "osp_kern__v3")
    assert store.aliases() == {"kern": "osp_kern__v3", "erweitert": "osp_erweitert"}
    store.set_alias("kern", None)
    assert store.aliases() == {"erweitert": "osp_erweitert"}


def test_unreachable_server_names_url(tmp_path: Path, embedder: Embedder) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    settings = base_settings(tmp_path, chroma_url=url, retries=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        KnowledgeBase.open(settings, embedder=embedder)
    assert url in str(info.value)
    assert "chroma run" in str(info.value)
    assert time.monotonic() - started < 10  # retried with backoff, then gave up


def test_data_dir_not_writable(tmp_path: Path, embedder: Embedder) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(NotWritable) as info:
        KnowledgeBase.open(base_settings(tmp_path, data_dir=blocker / "data"), embedder=embedder)
    assert "OSP_DATA_DIR" in str(info.value)


def test_read_only_dir_not_writable(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    with pytest.raises(NotWritable):
        Store(base_settings(tmp_path, data_dir=data))
